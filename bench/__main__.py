"""`make bench`: runs every benchmark module in bench/ with its default (laptop-sized) parameters.

Each module is also runnable alone (`python -m bench.<module> --help`). Benchmarks report ratios
against a baseline measured in the same run; absolute numbers depend on the machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The end-to-end bench needs the whole network running (`make up`) and takes ~10 minutes: `make bench-e2e`.
# Its floor pipeline is part of it (and runnable alone).
SEPARATE = {"e2e", "floor", "scaling"}  # scaling only reads results; e2e and floor need `make up`


def main() -> int:
    modules = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_") and p.stem not in SEPARATE)
    only = set(sys.argv[1:])
    failed = []
    for m in modules:
        if only and m not in only:
            continue
        print(f"\n=== bench.{m} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{m}"]).returncode != 0:
            failed.append(m)
    if failed:
        print("failed:", *failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
