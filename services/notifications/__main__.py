"""`python -m services.notifications` runs the notifications service."""

from __future__ import annotations

import uvicorn

from lotse_kit.logging import configure

from .bootstrap import bootstrap
from .config import NotificationsSettings


def main() -> None:
    settings = NotificationsSettings()
    configure("notifications", settings.log_level)
    app = bootstrap(settings=settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
