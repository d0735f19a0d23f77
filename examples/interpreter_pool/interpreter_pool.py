"""The Kommunales Integrationszentrum's interpreter pool (Sprachmittlerpool) connected to Lotse.

    python -m examples.interpreter_pool.interpreter_pool --credentials partner-ki-kreis-paderborn.properties

Referrals for the need `interpreter` reach the KI (the network file's process plan). The pool reads the
client's languages from the personal data sealed to the KI (category `contact`: preferred language first,
then the others), books the first interpreter who speaks one of them into a free slot, and accepts with
that appointment. When no interpreter speaks her language the referral is declined (`no_capacity`);
when the consent passed on no languages it is declined as `other`, saying so. Withdrawals and erasures
cancel the booking and are acknowledged, signed. Only the kit and the contracts are imported.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from contracts.events import ClientErased, ConsentWithdrawn, PartnerReferralV2, ReferralRevoked
from contracts.vocab import DeclineReason
from lotse_partner import (
    DeadLetters,
    InboxRecord,
    KafkaTransport,
    Outbox,
    PartnerInbox,
    PartnerKeys,
    accept,
    acknowledge,
    decline,
    kafka_options,
)

ORG = "ki-kreis-paderborn"
BERLIN = ZoneInfo("Europe/Berlin")
SLOTS = (time(10), time(13), time(15))


@dataclass(frozen=True)
class Interpreter:
    name: str
    languages: frozenset[str]


# The pool (illustrative): trained volunteer language mediators, by the languages they interpret into German.
POOL = (
    Interpreter("Amal", frozenset({"ar", "fr"})),
    Interpreter("Oksana", frozenset({"uk", "ru"})),
    Interpreter("Reza", frozenset({"fa", "prs"})),
    Interpreter("Zeynep", frozenset({"tr", "ku"})),
)


@dataclass(frozen=True)
class Booking:
    referral_id: str
    client_id: str
    interpreter: str
    language: str
    at: datetime


@dataclass
class InterpreterPool:
    keys: PartnerKeys
    pool: tuple[Interpreter, ...] = POOL
    first_day: date | None = None
    bookings: dict[str, Booking] = field(default_factory=dict)  # referral id -> booking

    async def handle(self, record: InboxRecord, outbox: Outbox) -> None:
        data = record.event.data
        if isinstance(data, PartnerReferralV2):
            contact = record.opened.personal_data.contact if record.opened else None
            wanted = ([contact.preferred_language] if contact and contact.preferred_language else []) + (
                contact.languages if contact else []
            )
            if not wanted:
                await outbox.send(
                    decline(record.event, DeclineReason.OTHER, reason_text="no language passed on: consent for 'contact' needed")
                )
                return
            booking = self.bookings.get(str(data.referral_id)) or self.book(str(data.referral_id), str(data.client_id), wanted)
            if booking is None:
                await outbox.send(decline(record.event, DeclineReason.NO_CAPACITY))
            else:
                await outbox.send(accept(record.event, appointment_at=booking.at))
        elif isinstance(data, ConsentWithdrawn | ClientErased):
            for ref, b in list(self.bookings.items()):
                if b.client_id == str(data.client_id):
                    del self.bookings[ref]
            await outbox.send(acknowledge(record.event, self.keys))
        elif isinstance(data, ReferralRevoked):
            self.bookings.pop(str(data.referral_id), None)  # the interpreter is free again

    def book(self, referral_id: str, client_id: str, languages: list[str]) -> Booking | None:
        """The first interpreter for the first of the client's languages anyone speaks, in their first free slot."""
        for lang in languages:
            base = lang.split("-")[0]
            for person in self.pool:
                if base in person.languages:
                    booking = Booking(referral_id, client_id, person.name, base, self.free_slot(person.name))
                    self.bookings[referral_id] = booking
                    return booking
        return None

    def free_slot(self, interpreter: str) -> datetime:
        taken = {b.at for b in self.bookings.values() if b.interpreter == interpreter}
        day = self.first_day or datetime.now(BERLIN).date() + timedelta(days=1)
        while True:
            if day.weekday() < 5:
                for t in SLOTS:
                    slot = datetime.combine(day, t, BERLIN).astimezone(UTC)
                    if slot not in taken:
                        return slot
            day += timedelta(days=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--credentials", type=Path, default=Path(f"partner-{ORG}.properties"))
    ap.add_argument("--keys", type=Path, default=Path("keys.json"))
    ap.add_argument("--dead-letters", type=Path, default=Path("dead-letters"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pool = InterpreterPool(PartnerKeys.load(args.keys))
    transport = KafkaTransport(kafka_options(args.credentials), ORG, group="sprachmittlerpool")
    asyncio.run(PartnerInbox(transport, pool.keys, pool.handle, DeadLetters(args.dead_letters)).run_until_signalled())


if __name__ == "__main__":
    main()
