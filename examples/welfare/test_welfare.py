"""The welfare example on the running network: the Jobcenter refers a client to a welfare association's
migration counselling through intake; the counselling tool (the association's own credentials and keys)
accepts with a booked appointment, later completes with an outcome; intake records both. When the client
withdraws her consent and has her data erased, the tool acknowledges both, signed, and consent records the
acknowledgements. Caritas over Kafka, AWO over HTTPS through the gateway (skipped while it does not run)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from examples.welfare.counselling_tool import CounsellingTool
from lotse_partner import DeadLetters, PartnerInbox
from tests.partner.stack import Caseworker, only_clients, partner_keys, require_stack, running, transport_for

JOBCENTER = "jobcenter-kreis-paderborn"


# The demo network's welfare associations: Caritas reads its inbox over Kafka, AWO over HTTPS (network file,
# `inbox.transport`); the process plans route integration courses to Caritas, language courses to AWO.
@pytest.mark.parametrize(
    ("over", "org", "need"), [("kafka", "caritas-paderborn", "integration_course"), ("https", "awo-kreis-paderborn", "language_course")]
)
async def test_the_association_accepts_books_and_completes_a_referral(over: str, org: str, need: str, tmp_path: Path) -> None:
    require_stack()
    keys = await partner_keys(org)
    tool = CounsellingTool(tmp_path / "counselling.sqlite", keys, org)
    transport = await transport_for(over, org)
    mine: set[str] = set()
    inbox = PartnerInbox(transport, keys, only_clients(tool.handle, lambda: mine), DeadLetters(tmp_path / "dlq"))
    async with Caseworker(JOBCENTER) as jobcenter, running(inbox):
        sent = await jobcenter.refer(
            need=need,
            recipients=[org],
            categories=["identity", "contact"],
            client={
                "given_name": "Olena",
                "family_name": "Beispiel-Koval",
                "date_of_birth": "1988-04-12",
                "email": "olena.example@clients.example",
                "preferred_language": "uk",
                "languages": ["uk", "ru"],
                "needs": [need],
            },
            reason="Integrationskurs mit Kinderbetreuung",
        )
        mine.add(sent.client_id)
        assert sent.to_org == org

        # The tool opened the sealed referral, filed the case and booked a slot; intake recorded the acceptance.
        accepted = await jobcenter.referral_when(sent.referral_id, "accepted")
        [case] = [c for c in tool.cases() if c["referral_id"] == sent.referral_id]
        assert (
            case["name"] == "Olena Beispiel-Koval" and case["language"] == "uk" and case["reason"] == "Integrationskurs mit Kinderbetreuung"
        )
        assert datetime.fromisoformat(accepted["appointment_at"]) == datetime.fromisoformat(case["appointment"])

        # After the appointment the counsellor completes the case with its outcome.
        await tool.complete(sent.referral_id, "Integrationskurs angemeldet, Kita-Platz beantragt", transport)
        completed = await jobcenter.referral_when(sent.referral_id, "completed")
        assert completed["outcome"] == "Integrationskurs angemeldet, Kita-Platz beantragt"

        # The client withdraws her consent, then has her data erased: the tool acts on both and acknowledges, signed.
        await jobcenter.withdraw_consents(sent.client_id)
        want = {("withdrawal", "acknowledged")}
        assert want <= await jobcenter.acknowledgements_when(sent.client_id, org, want)
        await jobcenter.erase(sent.client_id)
        want = {("withdrawal", "acknowledged"), ("erasure", "acknowledged")}
        assert want <= await jobcenter.acknowledgements_when(sent.client_id, org, want)
        assert [c for c in tool.cases() if c["client_id"] == sent.client_id] == []
    assert DeadLetters(tmp_path / "dlq").list() == []
