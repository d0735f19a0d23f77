"""The process entry every service's `__main__` uses: JSON logs, build the app, run uvicorn."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn

from .logging import configure
from .settings import KitSettings

S = TypeVar("S", bound=KitSettings)


def run(service: str, settings_cls: Callable[[], S], build: Callable[[S], Any], *, config_errors: tuple[type[Exception], ...] = ()) -> int:
    """Builds and serves the service on settings.http_host:http_port (a field every service settings has).

    An error in `config_errors` (e.g. an invalid network file) is printed and exits 2 instead of a traceback.
    """
    settings = settings_cls()
    configure(service, settings.log_level)
    try:
        app = build(settings)
    except config_errors as exc:
        print(str(exc), file=sys.stderr)
        return 2
    # What start-up built lives as long as the process: keep it out of the collector's full passes,
    # which otherwise show up as latency spikes (the consent decision API's p99).
    gc.freeze()
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)  # type: ignore[attr-defined]
    return 0
