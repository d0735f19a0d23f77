"""`python -m services.consent` runs the consent service."""

from __future__ import annotations

import gc

import uvicorn

from lotse_kit.logging import configure

from .bootstrap import bootstrap
from .config import ConsentSettings


def main() -> None:
    settings = ConsentSettings()
    configure("consent", settings.log_level)
    app = bootstrap(settings=settings)
    # Everything imported and built so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise show up as latency spikes in the decision API's p99.
    gc.freeze()
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
