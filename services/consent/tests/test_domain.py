"""The decision rule and the forwarding table, without I/O."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts import EVENTS
from contracts.vocab import DataCategory as C
from contracts.vocab import Purpose as P
from lotse_kit.declaration import PARTNER_INBOX
from services.consent.domain.errors import ConsentRuleViolation
from services.consent.domain.forwarding import FORWARDING_RULES, forwarded_event_id, recipients
from services.consent.domain.model import (
    ConsentForm,
    ConsentStatus,
    InformationGiven,
    decide,
    new_consent,
)

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def consent(**kw):
    base = dict(
        consent_id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        collecting_org="jobcenter-paderborn",
        recipients=["caritas-paderborn"],
        purposes=[P.REFERRAL],
        categories=[C.IDENTITY, C.CONTACT],
        form=ConsentForm.WRITTEN,
        form_reason=None,
        information=InformationGiven(True, True, True),
        information_language="de",
        interpreter_used=False,
        valid_until=None,
        now=NOW,
        default_validity=timedelta(days=365),
        max_validity=timedelta(days=730),
    )
    base.update(kw)
    return new_consent(**base)


def test_allowed_only_when_one_consent_covers_recipient_purpose_and_every_category() -> None:
    c = consent()
    d = decide([c], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.CONTACT], now=NOW)
    assert d.allowed and d.consent_id == c.consent_id and d.missing_categories == ()
    d = decide([c], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.HEALTH, C.IDENTITY, C.NEEDS], now=NOW)
    assert not d.allowed and d.missing_categories == (C.NEEDS, C.HEALTH) and d.reason.startswith("missing-categories")
    assert not decide([c], recipient="ki-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY], now=NOW).allowed
    d = decide([c], recipient="caritas-paderborn", purpose=P.CASE_COORDINATION, categories=[C.IDENTITY], now=NOW)
    assert not d.allowed and d.reason.startswith("no-consent") and d.consent_id is None
    # Two consents that each cover half do not add up: a disclosure rests on one consent.
    other = consent(categories=[C.HEALTH], client_id=c.client_id)
    assert not decide([c, other], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY, C.HEALTH], now=NOW).allowed


def test_withdrawn_and_expired_consents_name_themselves() -> None:
    c = consent(valid_until=NOW + timedelta(days=10))
    withdrawn = replace(c, stored_status=ConsentStatus.WITHDRAWN, withdrawn_at=NOW + timedelta(days=1))
    d = decide([withdrawn], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY], now=NOW + timedelta(days=2))
    assert not d.allowed and d.reason.startswith("withdrawn") and d.consent_id == c.consent_id
    d = decide([c], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY], now=NOW + timedelta(days=10))
    assert not d.allowed and d.reason.startswith("expired")
    # A newer active consent wins over a withdrawn one.
    newer = consent(client_id=c.client_id, now=NOW + timedelta(days=3))
    d = decide([withdrawn, newer], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY], now=NOW + timedelta(days=4))
    assert d.allowed and d.consent_id == newer.consent_id
    d = decide([newer], recipient="caritas-paderborn", purpose=P.REFERRAL, categories=[C.IDENTITY], now=NOW, erased_at=NOW)
    assert not d.allowed and d.reason.startswith("erased")


def test_67b_rules() -> None:
    with pytest.raises(ConsentRuleViolation) as exc:
        consent(information=InformationGiven(True, False, True))
    assert exc.value.field == "information" and "consequences_of_refusal" in exc.value.message
    with pytest.raises(ConsentRuleViolation) as exc:
        consent(form=ConsentForm.ORAL)
    assert exc.value.field == "form_reason"
    assert consent(form=ConsentForm.ORAL, form_reason="by telephone").form is ConsentForm.ORAL
    with pytest.raises(ConsentRuleViolation, match="at most 730 days ahead"):
        consent(valid_until=NOW + timedelta(days=731))
    assert consent(categories=[C.HEALTH]).legal_basis == ("GDPR Art. 6(1)(a)", "GDPR Art. 9(2)(a)", "§67b SGB X")


def test_forwarding_table_covers_the_published_contract() -> None:
    """Every event type the consent service declares for partner inboxes has a rule, and only those."""
    from services.consent.entrypoints.consumers import DECLARATION

    inbox_types = {m for m in DECLARATION.produces()[PARTNER_INBOX] if m in EVENTS}
    assert set(FORWARDING_RULES) == inbox_types - {"lotse.referral.sent"}  # referrals go through the gate
    for event_type, rule in FORWARDING_RULES.items():
        assert event_type in EVENTS and rule.why


def test_forwarding_never_echoes_and_ids_are_stable() -> None:
    assert recipients({"caritas-paderborn", "awo-paderborn"}, originator="awo-paderborn") == ["caritas-paderborn"]
    eid = uuid.uuid4()
    assert forwarded_event_id(eid, "a") == forwarded_event_id(eid, "a") != forwarded_event_id(eid, "b")
