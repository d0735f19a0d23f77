"""What a partner may post to its outbox over HTTPS: exactly what Lotse's consumers of `partner.<org>.outbox.v1`
accept from that partner (intake: referral answers; consent: signed acknowledgements), checked before the event
is put on the topic, so that a mistake is a 4xx to the partner now rather than a dead letter later.

The checks that need state (does the referral exist, does the signature verify) stay with the consumers; the
gateway checks the contract and that the partner speaks only for itself:
- the type is a referral answer or an acknowledgement, in its current schema;
- `source` is `/partners/<org>` of the calling organisation;
- an answer's `to_org` and an acknowledgement's `org` are the calling organisation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from contracts.envelope import partner_source
from contracts.events import (
    EVENTS,
    PARTNER_ACK_TYPES,
    PARTNER_ANSWER_TYPES,
    Acknowledgement,
    ErasureAcknowledged,
    EventData,
    ReferralAccepted,
    ReferralAnswer,
    ReferralCompleted,
    ReferralDeclined,
    WithdrawalAcknowledged,
)

from .errors import InvalidEvent

ACCEPTED_TYPES = (*PARTNER_ANSWER_TYPES, *PARTNER_ACK_TYPES)


def parse_data(event_type: str, data: Any) -> EventData:
    """The data of an event a partner may post, parsed by its contract; `InvalidEvent` for any other type."""
    try:
        if event_type == "lotse.referral.accepted":
            return ReferralAccepted.model_validate(data)
        if event_type == "lotse.referral.declined":
            return ReferralDeclined.model_validate(data)
        if event_type == "lotse.referral.completed":
            return ReferralCompleted.model_validate(data)
        if event_type == "lotse.withdrawal.acknowledged":
            return WithdrawalAcknowledged.model_validate(data)
        if event_type == "lotse.erasure.acknowledged":
            return ErasureAcknowledged.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InvalidEvent(f"data.{where}: {first['msg']}") from None
    raise InvalidEvent(f"a partner's outbox takes {', '.join(ACCEPTED_TYPES)}; not {event_type[:100]!r}")


def check_type(event_type: str, dataschema: str | None) -> None:
    if event_type not in ACCEPTED_TYPES:
        raise InvalidEvent(f"a partner's outbox takes {', '.join(ACCEPTED_TYPES)}; not {event_type[:100]!r}")
    current = EVENTS[event_type].dataschema
    if dataschema is not None and dataschema != current:
        raise InvalidEvent(f"{event_type} is accepted in its current schema {current}, not {dataschema[:200]!r}")


def check_speaks_for_itself(org: str, source: str, data: EventData) -> None:
    if source != partner_source(org):
        raise InvalidEvent(f"source must be {partner_source(org)}, the calling organisation, not {source[:100]!r}")
    if isinstance(data, ReferralAnswer) and data.to_org != org:
        raise InvalidEvent(f"{org} cannot answer in the name of {data.to_org}")
    if isinstance(data, Acknowledgement) and data.org != org:
        raise InvalidEvent(f"{org} cannot acknowledge in the name of {data.org}")


def digest(event: dict[str, Any]) -> str:
    """A fingerprint of a posted event, to tell a repeated POST (same id, same event) from a reused id."""
    return hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
