"""Opening what arrives on a partner's inbox."""

from __future__ import annotations

from typing import Any

from contracts import Envelope
from contracts.events import PartnerCorrection, PartnerReferralV2, SealedContent
from contracts.sealed import unseal

from .keys import PartnerKeys


def open_sealed(env: Envelope[Any], keys: PartnerKeys) -> SealedContent | None:
    """The sealed personal data of a referral or correction, opened with the organisation's keys; None for
    records that carry none (withdrawals, erasures, deadlines). Raises `contracts.sealed.SealedError` when
    the record was not sealed to these keys or was altered."""
    if isinstance(env.data, PartnerReferralV2 | PartnerCorrection):
        return SealedContent.model_validate(unseal(env.data.sealed.jwe, keys.enc))
    return None
