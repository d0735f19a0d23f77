"""Summaries of py-spy's raw (collapsed-stack) output: where a service's CPU goes, by frame and by package."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*):(?P<line>\d+)\)$")
# Frames every sample passes through: the interpreter's entry and the event loop itself.
_PLUMBING = re.compile(r"(<module>|_run_module_as_main|_run_code|run_until_complete|run_forever|_run_once|\(.*uvicorn/main\.py|uvloop)")


def package_of(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame.strip() or "?"
    path = m.group("file")
    if "site-packages/" in path:
        pkg = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        return {"pydantic_core": "pydantic", "_cffi_backend": "cryptography"}.get(pkg, pkg)
    repo = str(REPO) + "/"
    if path.startswith(repo) or not path.startswith("/"):
        rel = path.removeprefix(repo).removesuffix(".py").split("/")
        if rel[0] == "services" and len(rel) > 2:
            return ".".join(rel[:3])
        return ".".join(rel[:2]) if rel[0] in ("lotse_kit", "contracts", "lotse_partner", "bench") else rel[0]
    m2 = re.search(r"python3\.\d+/([^/]+)", path)
    return f"stdlib {m2.group(1).removesuffix('.py')}" if m2 else path


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for cut in ("site-packages/", str(REPO) + "/", "python3.11/"):
        if cut in path:
            path = path.split(cut, 1)[1]
            break
    return f"{m.group('func')} ({path}:{m.group('line')})"


def read(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(service: str, raw: Path, *, top: int = 15) -> str:
    """Shares of py-spy's non-idle samples. Not CPU seconds: py-spy counts a thread as busy while it waits
    for the GIL or sits in C code it cannot see into, so the CPU per referral comes from /proc (bench.e2e)."""
    stacks = read(raw)
    total = sum(c for _, c in stacks)
    if not total:
        return f"### {service}\n\nno samples"
    self_frames: Counter[str] = Counter()
    self_pkgs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, c in stacks:
        leaf = frames[-1]
        self_frames[short(leaf)] += c
        self_pkgs[package_of(leaf)] += c
        for f in set(frames):
            if not _PLUMBING.search(f):
                inclusive[short(f)] += c
    lines = [
        f"### {service}",
        "",
        f"{total} non-idle samples (py-spy, 100 Hz, --nonblocking; time in C code, e.g. uvloop's event loop and TLS, "
        "is attributed to the innermost Python frame).",
        "",
        "Self time by package (where the CPU is spent):",
        "",
        "| package | share |",
        "| --- | ---: |",
        *(f"| {p} | {c / total:.1%} |" for p, c in self_pkgs.most_common(top)),
        "",
        "Top frames, self time:",
        "",
        "| frame | share |",
        "| --- | ---: |",
        *(f"| `{f}` | {c / total:.1%} |" for f, c in self_frames.most_common(top)),
        "",
        "Top frames, inclusive (the share of samples a frame is on the stack):",
        "",
        "| frame | share |",
        "| --- | ---: |",
        *(f"| `{f}` | {c / total:.1%} |" for f, c in inclusive.most_common(top + 10)),
    ]
    return "\n".join(lines)
