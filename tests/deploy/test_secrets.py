"""No secret value in any deployment file: secrets are Secrets made in the cluster (Strimzi's User Operator,
the operator's `kubectl create secret`) or files generated into the compose stack's volume, never committed."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))
SCANNED = [REPO / "deploy" / "k8s", REPO / "deploy" / "compose", REPO / "deploy" / "validate.sh", REPO / "docs" / "deployment.md"]


def files() -> Iterator[Path]:
    for root in SCANNED:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)


def local_secret_values() -> set[str]:
    """The running local stack's real secrets, where there is one (make up): none may have leaked into a file."""
    values: set[str] = set()
    for f in (RUN / "kafka" / "secrets").glob("*"):
        values.add(f.read_text().strip())
    for f in [RUN / "keycloak" / "secrets.env", RUN / "keycloak" / "admin.env", *(RUN / "kafka" / "credentials").glob("*.properties")]:
        if f.is_file():
            for line in f.read_text().splitlines():
                key, _, value = line.partition("=")
                if re.search(r"SECRET|PASSWORD|password", key) and value.strip():
                    values.add(value.strip())
    return {v for v in values if len(v) >= 12}


def test_the_scan_covers_the_deployment_files() -> None:
    names = {p.name for p in files()}
    assert {"users.yaml", "kafka.yaml", "intake.yaml", "compose.yaml", "init.sh", "Dockerfile"} <= names


def test_no_private_key_or_secret_object_is_committed() -> None:
    for p in files():
        text = p.read_text(encoding="utf-8", errors="replace")
        assert "PRIVATE KEY-----" not in text, p
        if p.suffix in (".yaml", ".yml") and p.name != "compose.yaml":
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data") and not doc.get("stringData"), f"{p}: a Secret with values"


def test_no_literal_password_in_any_manifest() -> None:
    """`password: x`, `sasl.jaas.config ... password="x"`, a DSN with a password: none with a literal value."""
    dsn = re.compile(r"postgres(?:ql)?://[^:/\s]+:([^@\s]+)@")
    for p in files():
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in dsn.finditer(text):
            assert m.group(1).startswith("$"), f"{p}: a DSN with a literal password"
        for m in re.finditer(r'password="([^"]*)"', text):
            assert m.group(1).startswith("$"), f"{p}: a JAAS password that is not a variable"
        if p.suffix in (".yaml", ".yml"):
            for m in re.finditer(r"^\s*(?:password|client-?secret|secret):\s*(\S+)\s*$", text, re.MULTILINE | re.IGNORECASE):
                raise AssertionError(f"{p}: literal secret {m.group(0).strip()!r}")


def test_no_value_of_the_local_stacks_secrets_appears() -> None:
    secrets = local_secret_values()
    for p in files():
        text = p.read_text(encoding="utf-8", errors="replace")
        leaked = sum(s in text for s in secrets)
        assert not leaked, f"{p} contains {leaked} of the local stack's secret values"  # never shown, not even in part
