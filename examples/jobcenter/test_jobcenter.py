"""The Jobcenter example on the running network: Caritas refers two clients to the Jobcenter through intake;
the Jobcenter's system (its own credentials and keys) invites the one it can reach and declines the one
whose consent passed on no contact data; intake records both answers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from examples.jobcenter.answer_referrals import ORG, JobcenterSystem
from lotse_partner import DeadLetters, PartnerInbox
from tests.partner.stack import Caseworker, kafka_transport, only_clients, partner_keys, require_stack, running

CARITAS = "caritas-paderborn"
CLIENT = {"date_of_birth": "1990-02-03", "preferred_language": "ar", "languages": ["ar", "de"], "needs": ["job_placement"]}


async def test_the_jobcenter_accepts_whom_it_can_invite_and_declines_whom_it_cannot_reach(tmp_path: Path) -> None:
    require_stack()
    keys = await partner_keys(ORG)
    system = JobcenterSystem(keys)
    mine: set[str] = set()
    inbox = PartnerInbox(kafka_transport(ORG), keys, only_clients(system.handle, lambda: mine), DeadLetters(tmp_path / "dlq"))
    async with Caseworker(CARITAS) as caritas, running(inbox):
        reachable = await caritas.refer(
            need="job_placement",
            recipients=[ORG],
            categories=["identity", "contact"],
            client={"given_name": "Karim", "family_name": "Beispiel-Nasser", "email": "karim@clients.example", **CLIENT},
        )
        mine.add(reachable.client_id)
        unreachable = await caritas.refer(
            need="job_placement",
            recipients=[ORG],
            categories=["identity"],  # the client agreed to her identity only: no way to invite her
            client={"given_name": "Huda", "family_name": "Beispiel-Saleh", "email": "huda@clients.example", **CLIENT},
        )
        mine.add(unreachable.client_id)
        assert reachable.to_org == unreachable.to_org == ORG

        accepted = await caritas.referral_when(reachable.referral_id, "accepted")
        assert datetime.fromisoformat(accepted["appointment_at"]) == system.invitations[reachable.client_id]
        declined = await caritas.referral_when(unreachable.referral_id, "declined")
        assert declined["decline_reason"] == "client_unreachable"
    assert DeadLetters(tmp_path / "dlq").list() == []
