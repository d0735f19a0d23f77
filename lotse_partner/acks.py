"""Acknowledging a forwarded withdrawal or erasure, signed with the organisation's key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from contracts import Envelope, new_event
from contracts.events import ClientErased, ConsentWithdrawn, ErasureAcknowledged, WithdrawalAcknowledged
from contracts.sealed import sign_ack

from .keys import PartnerKeys

ACK_ID_NAMESPACE = uuid.UUID("4d1c0f3e-2b7a-5e49-8f61-0c9d2e7a5b33")


def acknowledge(env: Envelope[Any], keys: PartnerKeys) -> Envelope[WithdrawalAcknowledged] | Envelope[ErasureAcknowledged]:
    """The acknowledgement of `env` (a `lotse.consent.withdrawn` or `lotse.client.erased` from the inbox),
    to publish on `partner.<org>.outbox.v1` once the organisation has acted on it (stopped processing, erased)."""
    data = env.data
    if isinstance(data, ConsentWithdrawn):
        cls: Any = WithdrawalAcknowledged
    elif isinstance(data, ClientErased):
        cls = ErasureAcknowledged
    else:
        raise ValueError(f"{env.type} needs no acknowledgement")
    signature = sign_ack(str(data.client_id), str(env.id), keys.signing_key)
    ack = cls(
        client_id=data.client_id,
        org=keys.org,
        acknowledged_event_id=env.id,
        acknowledged_at=datetime.now(UTC),
        signature=signature,
    )
    # The same acknowledgement sent twice (a handler run again before its commit) is one event to consent.
    event_id = uuid.uuid5(ACK_ID_NAMESPACE, f"{env.id}:{keys.org}")
    result: Envelope[Any] = new_event(ack, source=f"/partners/{keys.org}", acting_org=keys.org, event_id=event_id)
    return result
