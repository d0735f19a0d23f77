"""The partner kit on its own: a partner opens what was sealed to it, nobody else can, and its
acknowledgements verify against its registered key only."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import decode, encode, new_event
from contracts.envelope import KafkaRecord
from contracts.events import (
    PARTNER_REFERRAL,
    ClientErased,
    ConsentWithdrawn,
    Contact,
    ErasureAcknowledged,
    Identity,
    PartnerReferralV2,
    PersonalData,
    ReferralNotes,
    Sealed,
    SealedContent,
    WithdrawalAcknowledged,
)
from contracts.sealed import PublicKey, SealedError, seal, verify_ack
from lotse_partner import PartnerKeys, acknowledge, open_sealed

CARITAS, AWO = "caritas-paderborn", "awo-kreis-paderborn"


def referral_to(keys_public: PublicKey, content: SealedContent) -> KafkaRecord:
    data = PartnerReferralV2(
        client_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-kreis-paderborn",
        to_org=CARITAS,
        service="mbe",
        consent_id=uuid.uuid4(),
        categories=content.personal_data.categories(),
        sealed=Sealed(jwe=seal(content.model_dump(mode="json"), keys_public), kid=keys_public.kid),
        sent_at=datetime.now(UTC),
    )
    rec = encode(new_event(data, source="/lotse/consent", spec=PARTNER_REFERRAL))
    return rec


CONTENT = SealedContent(
    personal_data=PersonalData(identity=Identity(given_name="Olena", family_name="Koval"), contact=Contact(email="olena@example.org")),
    notes=ReferralNotes(reason="Integrationskurs"),
)


def test_a_partner_opens_its_inbox_record_and_another_organisation_cannot(tmp_path: Path) -> None:
    caritas = PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)
    awo = PartnerKeys.load_or_create(tmp_path / "awo.json", AWO)
    rec = referral_to(caritas.public("enc"), CONTENT)
    assert b"Koval" not in rec.value and b"Integrationskurs" not in rec.value
    env = decode(rec.headers, rec.value)
    assert open_sealed(env, caritas) == CONTENT
    with pytest.raises(SealedError):
        open_sealed(env, awo)
    # The key file is the organisation's alone.
    assert stat.S_IMODE((tmp_path / "caritas.json").stat().st_mode) == 0o600


def test_after_a_key_rotation_old_records_still_open_and_new_ones_use_the_new_key(tmp_path: Path) -> None:
    keys = PartnerKeys.load_or_create(tmp_path / "k.json", CARITAS)
    before = decode(*_hv(referral_to(keys.public("enc"), CONTENT)))
    new_public = keys.rotate("enc")
    keys.save(tmp_path / "k.json")
    reloaded = PartnerKeys.load(tmp_path / "k.json")
    after = decode(*_hv(referral_to(new_public, CONTENT)))
    assert after.data.sealed.kid == new_public.kid != before.data.sealed.kid
    assert open_sealed(before, reloaded) == CONTENT and open_sealed(after, reloaded) == CONTENT


def test_acknowledgements_are_signed_by_the_partner_for_exactly_that_event(tmp_path: Path) -> None:
    caritas = PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)
    awo = PartnerKeys.load_or_create(tmp_path / "awo.json", AWO)
    client = uuid.uuid4()
    withdrawn = new_event(
        ConsentWithdrawn(client_id=client, consent_id=uuid.uuid4(), withdrawn_at=datetime.now(UTC)), source="/lotse/consent"
    )
    erased = new_event(
        ClientErased(client_id=client, requested_by_org="jobcenter-kreis-paderborn", erased_at=datetime.now(UTC)), source="/lotse/consent"
    )
    ack_w, ack_e = acknowledge(withdrawn, caritas), acknowledge(erased, caritas)
    assert isinstance(ack_w.data, WithdrawalAcknowledged) and isinstance(ack_e.data, ErasureAcknowledged)
    assert ack_w.data.acknowledged_event_id == withdrawn.id and ack_w.source == f"/partners/{CARITAS}"
    assert verify_ack(ack_w.data.signature, str(client), str(withdrawn.id), [caritas.public("sig")]) == caritas.public("sig").kid
    with pytest.raises(SealedError):  # not AWO's signature
        verify_ack(ack_w.data.signature, str(client), str(withdrawn.id), [awo.public("sig")])
    with pytest.raises(SealedError):  # not for the erasure
        verify_ack(ack_w.data.signature, str(client), str(erased.id), [caritas.public("sig")])
    # It round-trips through Kafka's record format as a contract event.
    rec = encode(ack_e)
    assert isinstance(decode(rec.headers, rec.value).data, ErasureAcknowledged)


def test_only_withdrawals_and_erasures_are_acknowledged(tmp_path: Path) -> None:
    keys = PartnerKeys.load_or_create(tmp_path / "k.json", CARITAS)
    env = decode(*_hv(referral_to(keys.public("enc"), CONTENT)))
    with pytest.raises(ValueError):
        acknowledge(env, keys)


def _hv(rec) -> tuple:
    return rec.headers, rec.value
