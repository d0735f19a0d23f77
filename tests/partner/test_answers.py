"""The answer helpers write the contracts' partner answers, each with an id that is the same when it is sent again;
and the kit imports without Lotse's services or service kit (it is installable on its own)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import decode, encode
from contracts.events import PARTNER_ANSWER_TYPES, ReferralAccepted, ReferralCompleted, ReferralDeclined
from contracts.vocab import DeclineReason
from lotse_partner import PartnerKeys, accept, book_appointment, complete, decline
from tests.partner.test_partner_kit import CARITAS, CONTENT, referral_to

REPO = Path(__file__).resolve().parents[2]


def test_answers_are_the_contracts_partner_answers_from_the_receiving_organisation(tmp_path: Path) -> None:
    keys = PartnerKeys.load_or_create(tmp_path / "k.json", CARITAS)
    rec = referral_to(keys.public("enc"), CONTENT)
    referral = decode(rec.headers, rec.value)
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    answers = [
        accept(referral),
        book_appointment(referral, at),
        decline(referral, DeclineReason.NO_CAPACITY),
        complete(referral, outcome="Integrationskurs angemeldet"),
    ]
    for env in answers:
        assert env.type in PARTNER_ANSWER_TYPES and env.source == f"/partners/{CARITAS}" and env.acting_org == CARITAS
        assert env.data.to_org == CARITAS and env.data.referral_id == referral.data.referral_id
        again = encode(env)
        assert decode(again.headers, again.value).data == env.data  # valid on the wire
    assert isinstance(answers[1].data, ReferralAccepted) and answers[1].data.appointment_at == at
    assert isinstance(answers[2].data, ReferralDeclined) and answers[2].data.reason is DeclineReason.NO_CAPACITY
    assert isinstance(answers[3].data, ReferralCompleted) and answers[3].data.outcome == "Integrationskurs angemeldet"


def test_an_answer_sent_again_has_the_same_event_id_so_lotse_applies_it_once(tmp_path: Path) -> None:
    keys = PartnerKeys.load_or_create(tmp_path / "k.json", CARITAS)
    referral = decode(*_hv(referral_to(keys.public("enc"), CONTENT)))
    assert accept(referral).id == accept(referral, appointment_at=datetime.now(UTC)).id
    assert accept(referral).id != decline(referral, DeclineReason.NOT_ELIGIBLE).id != complete(referral).id
    # Completion days later, from what the partner kept: the same id as from the inbox record.
    d = referral.data
    assert complete((d.client_id, d.referral_id, CARITAS), outcome="x").id == complete(referral).id
    other = decode(*_hv(referral_to(keys.public("enc"), CONTENT)))
    assert accept(other).id != accept(referral).id


def test_a_decline_for_another_reason_says_which(tmp_path: Path) -> None:
    referral = decode(*_hv(referral_to(PartnerKeys.load_or_create(tmp_path / "k.json", CARITAS).public("enc"), CONTENT)))
    with pytest.raises(ValueError):
        decline(referral, DeclineReason.OTHER)
    assert decline(referral, DeclineReason.OTHER, reason_text="no office in Büren").data.reason_text == "no office in Büren"


def test_the_kit_imports_without_lotses_services_and_service_kit() -> None:
    blocked = ("lotse_kit", "services", "lotse_cli", "faststream", "asyncpg", "fastapi", "uvicorn")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('the partner kit must not need ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lotse_partner, lotse_partner.https, lotse_partner.webhooks\n"
        "print(sorted(lotse_partner.__all__)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _hv(rec: object) -> tuple[object, object]:
    return rec.headers, rec.value  # type: ignore[attr-defined]


def test_the_partner_extra_pins_what_requirements_txt_pins() -> None:
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["partner"]
    pins = {
        line.split("==")[0].lower(): line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert extra and all(pins.get(req.split("==")[0].lower()) == req for req in extra), (extra, pins)
