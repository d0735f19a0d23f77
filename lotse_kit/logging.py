"""Structured JSON logs. Every line carries `event_id` and `client_id` (null outside an event)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
client_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_id", default=None)
service_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": service_var.get(),
            "msg": record.getMessage(),
            "event_id": getattr(record, "event_id", None) or event_id_var.get(),
            "client_id": getattr(record, "client_id", None) or client_id_var.get(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and k not in line:
                line[k] = v
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(service: str, level: str = "INFO") -> None:
    service_var.set(service)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Their per-message INFO lines carry none of our context and add nothing we don't log ourselves (httpx: one
    # line per call between services, with the URL and its query, at up to 5 lines per referral).
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def event_context(event_id: object | None, client_id: object | None) -> Iterator[None]:
    t1 = event_id_var.set(str(event_id) if event_id else None)
    t2 = client_id_var.set(str(client_id) if client_id else None)
    try:
        yield
    finally:
        event_id_var.reset(t1)
        client_id_var.reset(t2)
