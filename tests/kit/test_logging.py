"""The JSON log lines (`lotse_kit.logging`): encoded with orjson, read exactly as the standard library wrote them."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import enum
import json
import logging
import sys
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from lotse_kit.logging import JsonFormatter, configure, event_context, service_var

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def reference(record: logging.LogRecord) -> str:
    """The formatter as it was with the standard library's json (before orjson): what a line must read as."""
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "service": service_var.get(),
        "msg": record.getMessage(),
        "event_id": getattr(record, "event_id", None),
        "client_id": getattr(record, "client_id", None),
    }
    for k, v in record.__dict__.items():
        if k not in _RESERVED and k not in line:
            line[k] = v
    if record.exc_info:
        line["exc"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(line, default=str, ensure_ascii=False)


def record(msg: str = "referral sent", *, created: float | None = None, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord("lotse.test", logging.INFO, __file__, 1, msg, None, exc_info)
    r.__dict__.update(extra)
    if created is not None:
        r.created = created
    return r


class Colour(enum.Enum):
    RED = 1


class Purpose(enum.StrEnum):
    REFERRAL = "referral"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int


Pair = collections.namedtuple("Pair", "a b")

ODD_VALUES: dict[str, Any] = {
    "uuid": uuid.UUID("6f1c1e0e-5d0b-4c1e-9b1a-2f7f3f0d9a10"),
    "datetime": datetime(2026, 11, 30, 19, 44, 6, 123456, tzinfo=UTC),
    "naive_datetime": datetime(2026, 11, 30, 19, 44, 6),
    "date": date(2026, 11, 30),
    "plain_enum": Colour.RED,
    "str_enum": Purpose.REFERRAL,
    "int_enum": Level.HIGH,
    "exception": ValueError("Zahl fehlt"),
    "decimal": decimal.Decimal("1.10"),
    "set": {3},
    "bytes": b"\x00\xff",
    "dataclass": Point(1),
    "namedtuple": Pair(1, "b"),
    "ordered_dict": collections.OrderedDict(a=1),
    "nan": float("nan"),
    "infinity": float("inf"),
    "huge_int": 2**70,
    "int_keys": {1: "a", 2: "b"},
    "tuple": (1, "x", None),
    "nested": {"client": {"id": uuid.UUID(int=1), "when": date(2026, 1, 2), "tags": ["ä", Colour.RED, 1.5]}},
    "non_ascii": "Müller, Kyjiw \u2013 Дмитро 😀 \u2028",
    "control": 'a\nb\t"c"\x00',
    "lone_surrogate": "\ud800",
    "float": 0.1,
    "bool": True,
    "none": None,
}


@pytest.mark.parametrize("name", ODD_VALUES)
def test_a_value_reads_as_the_standard_library_wrote_it(name: str) -> None:
    r = record(value=ODD_VALUES[name], event_id=None)
    line, expected = JsonFormatter().format(r), reference(r)
    # NaN and infinity are not JSON, so those lines are compared as text; all others as what a reader parses.
    assert line == expected or json.loads(line) == json.loads(expected), (line, expected)


def test_all_odd_values_in_one_line() -> None:
    r = record(**ODD_VALUES)
    line, expected = JsonFormatter().format(r), reference(r)
    assert line == expected or json.loads(line) == json.loads(expected)


def test_an_extra_named_like_a_fixed_key_leaves_the_fixed_key_alone() -> None:
    token = service_var.set("intake")
    try:
        r = record(service="consent", ts="then", level="x", logger="y", subject="caseworker-1")
        line = json.loads(JsonFormatter().format(r))
    finally:
        service_var.reset(token)
    assert line["service"] == "intake" and line["msg"] == "referral sent" and line["level"] == "info"
    assert line["logger"] == "lotse.test" and line["ts"] != "then" and line["subject"] == "caseworker-1"
    assert list(line)[:7] == ["ts", "level", "logger", "service", "msg", "event_id", "client_id"]


def test_event_and_client_ids_from_the_context_or_the_record() -> None:
    cid = uuid.UUID(int=7)
    with event_context("e-1", cid):
        line = json.loads(JsonFormatter().format(record()))
        assert (line["event_id"], line["client_id"]) == ("e-1", str(cid))
        line = json.loads(JsonFormatter().format(record(event_id=uuid.UUID(int=9))))
        assert (line["event_id"], line["client_id"]) == (str(uuid.UUID(int=9)), str(cid))


def test_an_exception_is_written_and_an_extra_exc_gives_way() -> None:
    try:
        raise RuntimeError("kaputt: Größe")
    except RuntimeError:
        r = record(exc_info=sys.exc_info(), exc="mine")
    line = JsonFormatter().format(r)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["exc"].startswith("Traceback") and "kaputt: Größe" in parsed["exc"]
    assert parsed == json.loads(reference(r)) | {"ts": parsed["ts"]}


def test_non_ascii_is_kept_and_one_line_stays_one_line() -> None:
    line = JsonFormatter().format(record("Zuweisung an Caritas\nzweite Zeile", name="Jürgen Ölmüller", nested={"ort": "Höxter"}))
    assert "Jürgen Ölmüller" in line and "Höxter" in line and "\\u" not in line
    assert "\n" not in line and json.loads(line)["msg"] == "Zuweisung an Caritas\nzweite Zeile"


@pytest.mark.parametrize(
    "created",
    [1764531846.0, 1764531846.0004999, 1764531846.0005, 1764531846.9994999, 1764531846.9995, 1764531846.9999995, 1764531846.9999996, 0.0],
)
def test_the_timestamp_is_utc_to_the_millisecond_as_datetime_writes_it(created: float) -> None:
    ts = json.loads(JsonFormatter().format(record(created=created)))["ts"]
    assert ts == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def test_configured_service_writes_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("kittest", "INFO")
        logging.getLogger("lotse.test").info("client registered", extra={"client_id": uuid.UUID(int=3), "org": "caritas-paderborn"})
        logging.getLogger("lotse.test").debug("below the level")
        out = capsys.readouterr().out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["service"] == "kittest" and line["client_id"] == str(uuid.UUID(int=3)) and line["org"] == "caritas-paderborn"
