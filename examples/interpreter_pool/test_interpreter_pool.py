"""The interpreter-pool example on the running network: a case manager (KIM) refers two clients who need an
interpreter; the KI's pool (its own credentials and keys) books an Arabic interpreter for the one who speaks
Arabic and declines the one whose language (Tigrinya) nobody in the pool speaks; intake records both."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from examples.interpreter_pool.interpreter_pool import ORG, InterpreterPool
from lotse_partner import DeadLetters, PartnerInbox
from tests.partner.stack import Caseworker, kafka_transport, only_clients, partner_keys, require_stack, running

KIM = "kim-kreis-paderborn"


async def test_the_pool_books_an_interpreter_in_the_clients_language_or_declines(tmp_path: Path) -> None:
    require_stack()
    keys = await partner_keys(ORG)
    pool = InterpreterPool(keys)
    mine: set[str] = set()
    inbox = PartnerInbox(kafka_transport(ORG), keys, only_clients(pool.handle, lambda: mine), DeadLetters(tmp_path / "dlq"))
    async with Caseworker(KIM) as kim, running(inbox):
        arabic = await kim.refer(
            need="interpreter",
            recipients=[ORG],
            categories=["identity", "contact"],
            client={
                "given_name": "Samir",
                "family_name": "Beispiel-Haddad",
                "email": "samir@clients.example",
                "preferred_language": "ar",
                "languages": ["ar"],
                "needs": ["interpreter"],
            },
            reason="Termin bei der Ausländerbehörde",
        )
        mine.add(arabic.client_id)
        tigrinya = await kim.refer(
            need="interpreter",
            recipients=[ORG],
            categories=["identity", "contact"],
            client={
                "given_name": "Selam",
                "family_name": "Beispiel-Tesfay",
                "email": "selam@clients.example",
                "preferred_language": "ti",
                "languages": ["ti"],
                "needs": ["interpreter"],
            },
        )
        mine.add(tigrinya.client_id)
        assert arabic.to_org == tigrinya.to_org == ORG

        accepted = await kim.referral_when(arabic.referral_id, "accepted")
        booking = pool.bookings[arabic.referral_id]
        assert (booking.interpreter, booking.language) == ("Amal", "ar")
        assert datetime.fromisoformat(accepted["appointment_at"]) == booking.at
        declined = await kim.referral_when(tigrinya.referral_id, "declined")
        assert declined["decline_reason"] == "no_capacity" and tigrinya.referral_id not in pool.bookings
    assert DeadLetters(tmp_path / "dlq").list() == []
