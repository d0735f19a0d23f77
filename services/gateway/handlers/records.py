"""An inbox record as the partner gets it over HTTPS: the structured CloudEvent (contracts.structured)."""

from __future__ import annotations

import logging
from typing import Any

from contracts import DecodeError
from contracts.structured import to_structured

from ..adapters.inbox import InboxRecord

log = logging.getLogger(__name__)


def structured_record(org: str, rec: InboxRecord) -> tuple[dict[str, Any] | None, str]:
    """(the structured event or None if the record is no CloudEvent, the id to deliver it under)."""
    try:
        event = to_structured(rec.headers, rec.value)
    except DecodeError as exc:
        # Consent writes every inbox record; one that is no CloudEvent is a bug there. It is handed out as a gap
        # (event null, with the reason) rather than withheld, so the partner's position can move past it.
        log.error(
            "inbox record is no CloudEvent", extra={"org": org, "partition": rec.partition, "offset": rec.offset, "reason": exc.reason}
        )
        return None, f"{org}.{rec.partition}.{rec.offset}"
    return event, str(event["id"])
