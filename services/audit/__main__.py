"""`python -m services.audit` runs the audit service."""

from __future__ import annotations

import uvicorn

from lotse_kit.logging import configure

from .bootstrap import bootstrap
from .config import AuditSettings


def main() -> None:
    settings = AuditSettings()
    configure("audit", settings.log_level)
    app = bootstrap(settings=settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
