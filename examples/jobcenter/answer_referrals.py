"""A Jobcenter's specialist system (area "Markt und Integration") answering the referrals Lotse routes to it.

    python -m examples.jobcenter.answer_referrals --credentials partner-jobcenter-kreis-paderborn.properties

The rules are the Jobcenter's, written down once: it takes referrals for job placement, integration
courses and vocational training (its services in the network file) and invites the client to the next
working day's open consultation; it declines a referral it cannot act on, with the contracts' reason:

- `client_unreachable` when the consent did not let Lotse pass on any contact data (no way to invite);
- `not_eligible` when the referral asks for something the Jobcenter does not offer.

Withdrawals and erasures are acknowledged, signed, after the system has acted on them (here: it forgets
the invitation). Only the kit and the contracts are imported: copy this file as it is.
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
from contracts.vocab import DeclineReason, Need
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

ORG = "jobcenter-kreis-paderborn"
BERLIN = ZoneInfo("Europe/Berlin")
OFFERED = frozenset({Need.JOB_PLACEMENT, Need.INTEGRATION_COURSE, Need.VOCATIONAL_TRAINING})
OPEN_CONSULTATION = time(8, 30)


@dataclass
class JobcenterSystem:
    keys: PartnerKeys
    invitations: dict[str, datetime] = field(default_factory=dict)  # client id -> appointment

    async def handle(self, record: InboxRecord, outbox: Outbox) -> None:
        data = record.event.data
        if isinstance(data, PartnerReferralV2):
            contact = record.opened.personal_data.contact if record.opened else None
            if data.need is not None and data.need not in OFFERED:
                await outbox.send(decline(record.event, DeclineReason.NOT_ELIGIBLE))
            elif contact is None or not (contact.email or contact.phone):
                await outbox.send(decline(record.event, DeclineReason.CLIENT_UNREACHABLE))
            else:
                at = next_working_day(datetime.now(BERLIN).date())
                self.invitations[str(data.client_id)] = at
                await outbox.send(accept(record.event, appointment_at=at))
        elif isinstance(data, ConsentWithdrawn | ClientErased):
            self.invitations.pop(str(data.client_id), None)
            await outbox.send(acknowledge(record.event, self.keys))
        elif isinstance(data, ReferralRevoked):
            self.invitations.pop(str(data.client_id), None)


def next_working_day(today: date) -> datetime:
    """The open consultation on the next day from Monday to Friday (public holidays are the Jobcenter's own calendar's)."""
    day = today + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, OPEN_CONSULTATION, BERLIN).astimezone(UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--credentials", type=Path, default=Path(f"partner-{ORG}.properties"))
    ap.add_argument("--keys", type=Path, default=Path("keys.json"))
    ap.add_argument("--dead-letters", type=Path, default=Path("dead-letters"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    system = JobcenterSystem(PartnerKeys.load(args.keys))
    transport = KafkaTransport(kafka_options(args.credentials), ORG, group="fachverfahren")
    asyncio.run(PartnerInbox(transport, system.keys, system.handle, DeadLetters(args.dead_letters)).run_until_signalled())


if __name__ == "__main__":
    main()
