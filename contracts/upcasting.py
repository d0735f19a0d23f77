"""Upcasters: how a record written under an older version of an event reads as the current version.

A breaking change to an event is a new version (`lotse.x.v2`). Records written as v1 stay in Kafka
(and in partner systems' outboxes) for as long as the topic retains them, so the decoder must still
read them. Each step is one function registered next to the new model:

    @upcaster("lotse.client.registered", from_version=1)
    def _registered_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        ...  # v1 JSON data in, v2 JSON data out

`contracts.decode` validates an old record against its own (old) schema, turns the validated data
into JSON, runs the chain of upcasters from that version to the current one, and validates the result
against the current model. A handler therefore only ever sees the current model, and the envelope's
`dataschema` names the current schema. An upcaster that fails, a missing step, or a result the
current model rejects is a `schema-invalid` decode error: the record is dead-lettered with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JsonData = dict[str, Any]
Upcaster = Callable[[JsonData], JsonData]

# (event type, version it reads) -> the function that turns that version's JSON data into the next one's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Registers the step from `from_version` to `from_version + 1` of `event_type`."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"{event_type} v{from_version} already has an upcaster: {UPCASTERS[key].__qualname__}")
        UPCASTERS[key] = fn
        return fn

    return register


class UpcastError(Exception):
    """An older record could not be turned into the current version (reported as `schema-invalid`)."""


def upcast(event_type: str, data: JsonData, from_version: int, to_version: int) -> JsonData:
    """Runs the upcasters of `event_type` from `from_version` up to `to_version`, one version at a time."""
    for version in range(from_version, to_version):
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise UpcastError(f"no upcaster from {event_type} v{version} to v{version + 1}")
        try:
            data = step(data)
        except Exception as exc:  # an upcaster's bug or an unforeseen old record: dead-letter it, don't crash
            raise UpcastError(f"upcasting {event_type} v{version} to v{version + 1} failed: {exc!r}") from exc
        if not isinstance(data, dict):
            raise UpcastError(f"upcaster from {event_type} v{version} returned {type(data).__name__}, not a JSON object")
    return data
