"""Structured JSON logs. Every line carries `event_id` and `client_id` (null outside an event).

A line is one JSON object: `ts` (UTC, milliseconds), `level`, `logger`, `service`, `msg`, `event_id`,
`client_id`, then the record's `extra` fields in the order given (a field named like one of those is left
out), then `exc` if the record has an exception. Values JSON cannot express are written as `str(value)`
(UUIDs, datetimes, enums, exceptions, ...), non-ASCII text as it is.

Lines are encoded with orjson (about 25 lines per referral across the services). Where orjson would
write a value differently from the standard library's `json.dumps(..., default=str, ensure_ascii=False)`
(a plain enum: its value instead of its `str`; NaN or infinity: null; a named tuple or another container
subclass; a dict key that is not a string; an integer beyond 64 bits; a lone surrogate), the line is
written by the standard library instead, so every line reads exactly as it did.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any
from uuid import UUID

import orjson

event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
client_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_id", default=None)
service_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# The fixed keys of a line come first; an `extra` field of the same name is left out.
_FIXED = ("ts", "level", "logger", "service", "msg", "event_id", "client_id")
_SKIP = frozenset(_RESERVED | set(_FIXED))

# Datetimes and dataclasses go to `default=str` as with the standard library (orjson would write them its own way).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# Written identically by orjson and the standard library (a UUID as `str(uuid)` by both).
_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None), UUID})
_MAX_DEPTH = 16


def _same_in_orjson(value: Any, depth: int = 0) -> bool:
    """Whether orjson writes `value` as `json.dumps(value, default=str, ensure_ascii=False)` would
    (its failures, e.g. a non-string key or a huge integer, are caught and written by the standard library)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is float:
        return math.isfinite(value)  # NaN and infinity: orjson writes null, the standard library NaN/Infinity
    if depth >= _MAX_DEPTH:
        return False
    if t is dict:
        return all(_same_in_orjson(v, depth + 1) for v in value.values())
    if t is list or t is tuple:
        return all(_same_in_orjson(v, depth + 1) for v in value)
    # orjson writes an enum as its value and a container subclass its own way; anything else it does not know
    # (exceptions, datetimes, sets, bytes, ...) goes to `default=str` like with the standard library.
    return not isinstance(value, (Enum, float, dict, list, tuple))


# The date and time of day of the last second a line was written in (one tuple, replaced whole: a worker
# thread's log call reads either the old or the new one).
_second: tuple[int, str] = (-1, "")


def _iso_ms(created: float) -> str:
    """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, the date and time of day
    formatted once per second."""
    global _second
    second = int(created // 1)
    micros = round((created - second) * 1e6)  # rounded half to even, as datetime.fromtimestamp does
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return "%s.%03d+00:00" % (cached[1], micros // 1000)  # noqa: UP031 - cheaper than an f-string's format spec


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": service_var.get(),
            "msg": record.getMessage(),
            "event_id": getattr(record, "event_id", None) or event_id_var.get(),
            "client_id": getattr(record, "client_id", None) or client_id_var.get(),
        }
        plain = True
        for k, v in record.__dict__.items():
            if k not in _SKIP:
                line[k] = v
                if plain and type(v) not in _SCALARS and not _same_in_orjson(v):
                    plain = False
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if plain and _same_in_orjson(line["event_id"]) and _same_in_orjson(line["client_id"]):
            try:
                return orjson.dumps(line, default=str, option=_ORJSON_OPTIONS).decode()
            except TypeError:
                pass  # e.g. a dict key that is not a string, an integer beyond 64 bits, a lone surrogate
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(service: str, level: str = "INFO") -> None:
    service_var.set(service)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A line carries none of the record's thread and process names: don't look them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
