"""`lotse audit ...`: verify the tamper-evident audit log from outside the service.

    lotse audit verify export.ndjson --tree-head sth.json [--public-key key.pem]
    lotse audit verify --url http://127.0.0.1:8004 [--public-key key.pem]
    lotse audit tree-head --url http://127.0.0.1:8004 > sth.json

`verify` prints `OK: ...` and exits 0, or `FAILED: first bad index N: ...` and exits 1 (2 for
unusable input). On logs of 10,000 entries or more it shows a progress bar on stderr.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lotse_kit.settings import service_url

from .domain.tree_head import TreeHead
from .domain.verify import ExportFormatError, ExportRow, Verdict, read_export, verify

app = typer.Typer(help="Verify and inspect the tamper-evident audit log.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

PROGRESS_FROM = 10_000


@app.callback()
def main() -> None:
    """Verify and inspect the tamper-evident audit log."""


def load_public_key(value: str) -> Ed25519PublicKey:
    """A PEM file (public or private key), or base64 of the 32 raw public-key bytes."""
    path = Path(value)
    if path.exists():
        data = path.read_bytes()
        if b"PRIVATE KEY" in data:
            key = load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise typer.BadParameter("not an Ed25519 key")
            return key.public_key()
        pub = load_pem_public_key(data)
        if not isinstance(pub, Ed25519PublicKey):
            raise typer.BadParameter("not an Ed25519 key")
        return pub
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise typer.BadParameter("neither a key file nor base64 of a raw Ed25519 public key") from exc


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


def _run(rows: Iterator[ExportRow], head: TreeHead, key: Ed25519PublicKey | None, show_progress: bool | None) -> Verdict:
    progress_wanted = head.tree_size >= PROGRESS_FROM if show_progress is None else show_progress
    if not progress_wanted:
        return verify(rows, head, public_key=key)
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True) as p:
        task = p.add_task("verify", total=head.tree_size)
        return verify(rows, head, public_key=key, on_progress=lambda n: p.update(task, completed=n))


def _finish(verdict: Verdict, head: TreeHead) -> None:
    out.print(verdict.line(head), highlight=False, soft_wrap=True, markup=False)
    raise typer.Exit(0 if verdict.ok else 1)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@app.command("verify")
def verify_cmd(
    export: Annotated[Path | None, typer.Argument(help="Export file (ndjson or csv) from GET /v1/audit/export.")] = None,
    tree_head: Annotated[Path | None, typer.Option("--tree-head", help="Signed tree head JSON (GET /v1/audit/tree-head).")] = None,
    url: Annotated[str | None, typer.Option(help="Audit service base URL: fetch the latest tree head and the export from it.")] = None,
    public_key: Annotated[str | None, typer.Option("--public-key", help="Pinned Ed25519 key: PEM file or base64 raw public key.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, ndjson or csv")] = "auto",
    token: Annotated[
        str | None, typer.Option(envvar="LOTSE_TOKEN", help="Access token (e.g. $(lotse dev token --role auditor)); also LOTSE_TOKEN.")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on from 10,000 entries).")
    ] = None,
) -> None:
    """Check an export against a signed tree head; print OK or the first bad index."""
    key = load_public_key(public_key) if public_key else None
    if url:
        base = url.rstrip("/")
        headers = _auth(token)
        with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30.0, read=300.0)) as client:
            r = client.get("/v1/audit/tree-head")
            if r.status_code != 200:
                err.print(f"cannot fetch the tree head: HTTP {r.status_code} {r.text[:300]}")
                raise typer.Exit(2)
            head = TreeHead.from_json(r.json())
            with client.stream("GET", "/v1/audit/export", params={"format": "ndjson", "tree_size": head.tree_size}) as resp:
                if resp.status_code != 200:
                    err.print(f"cannot fetch the export: HTTP {resp.status_code}")
                    raise typer.Exit(2)
                try:
                    verdict = _run(read_export(resp.iter_lines(), "ndjson"), head, key, progress)
                except ExportFormatError as exc:
                    err.print(f"unusable export: {exc}")
                    raise typer.Exit(2) from None
        _finish(verdict, head)
    if export is None or tree_head is None:
        err.print("give an export file and --tree-head, or --url")
        raise typer.Exit(2)
    try:
        head = TreeHead.from_json(json.loads(tree_head.read_text()))
    except (ValueError, KeyError) as exc:
        err.print(f"unusable tree head {tree_head}: {exc}")
        raise typer.Exit(2) from None
    with ExitStack() as stack:
        f = stack.enter_context(export.open(encoding="utf-8", newline=""))
        try:
            verdict = _run(read_export(f, _format_of(export, fmt)), head, key, progress)
        except ExportFormatError as exc:
            err.print(f"unusable export: {exc}")
            raise typer.Exit(2) from None
    _finish(verdict, head)


@app.command("tree-head")
def tree_head_cmd(
    url: Annotated[str, typer.Option(help="Audit service base URL.")] = service_url("audit"),
    token: Annotated[
        str | None, typer.Option(envvar="LOTSE_TOKEN", help="Access token (e.g. $(lotse dev token --role auditor)); also LOTSE_TOKEN.")
    ] = None,
) -> None:
    """Print the latest signed tree head as JSON (keep it to verify an export later)."""
    r = httpx.get(url.rstrip("/") + "/v1/audit/tree-head", headers=_auth(token), timeout=30.0)
    if r.status_code != 200:
        err.print(f"HTTP {r.status_code}: {r.text[:300]}")
        raise typer.Exit(2)
    sys.stdout.write(json.dumps(r.json(), indent=2) + "\n")


if __name__ == "__main__":
    app()
