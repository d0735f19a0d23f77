"""`python -m services.intake`: runs the intake service."""

from __future__ import annotations

import sys

import uvicorn

from lotse_kit.logging import configure

from .bootstrap import bootstrap
from .config import IntakeSettings
from .network import NetworkConfigError


def main() -> int:
    settings = IntakeSettings()
    configure("intake", settings.log_level)
    try:
        app = bootstrap(settings)
    except NetworkConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
