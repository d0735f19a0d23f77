"""A welfare association's counselling tool (Caritas's Migrationsberatung, MBE) connected to Lotse.

Any welfare association can run it (`--org`); on the demo network Caritas reads its inbox over Kafka and
AWO over HTTPS (the network file's `inbox.transport`).

    python -m examples.welfare.counselling_tool --credentials partner-caritas-paderborn.properties run
    python -m examples.welfare.counselling_tool --gateway https://lotse.example --token-url … --client-id … run   (HTTPS)
    python -m examples.welfare.counselling_tool cases
    python -m examples.welfare.counselling_tool complete <referral-id> --outcome "Integrationskurs angemeldet"

What it does, with the partner kit (`lotse_partner`):

1. It reads Caritas's inbox. A referral arrives with the client's personal data sealed to Caritas's key;
   the kit opens it. The tool files a case in its own database (SQLite here), books the first free
   counselling slot and answers `accepted` with that appointment.
2. After the appointment the counsellor completes the case with an outcome: `complete` answers
   `completed` on the outbox (any time later, from another process).
3. When the client withdraws her consent, the tool stops working with her data (the case is closed) and
   acknowledges, signed; when her data is erased at Lotse, the tool erases its copy and acknowledges.

Only the kit and the contracts are imported: copy this file into a partner's project as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from contracts.events import ClientErased, ConsentWithdrawn, PartnerReferralV2, ReferralRevoked
from lotse_partner import (
    DeadLetters,
    InboxRecord,
    KafkaTransport,
    Outbox,
    PartnerInbox,
    PartnerKeys,
    Transport,
    accept,
    acknowledge,
    complete,
    kafka_options,
)

ORG = "caritas-paderborn"
BERLIN = ZoneInfo("Europe/Berlin")
# Counselling hours: Monday to Thursday, one-hour slots.
SLOTS = (time(9), time(10), time(11), time(14), time(15))

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    referral_id TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    name        TEXT,
    email       TEXT,
    language    TEXT,
    reason      TEXT,
    appointment TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,   -- booked | completed | closed (consent withdrawn or referral revoked)
    outcome     TEXT
);
"""


@dataclass
class CounsellingTool:
    """The tool's own state (a SQLite file) and its answers to Lotse."""

    db_path: Path
    keys: PartnerKeys
    org: str = ORG
    first_day: date | None = None  # the first day to book (default: tomorrow)

    def __post_init__(self) -> None:
        self.db = sqlite3.connect(self.db_path)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)

    # ------------------------------------------------------------ the inbox handler
    async def handle(self, record: InboxRecord, outbox: Outbox) -> None:
        data = record.event.data
        if isinstance(data, PartnerReferralV2):
            await outbox.send(self.book(record))
        elif isinstance(data, ConsentWithdrawn):
            # Art. 7(3) GDPR: no further processing on that consent; the case is closed, then acknowledged.
            self.db.execute("UPDATE cases SET status = 'closed' WHERE client_id = ? AND status = 'booked'", (str(data.client_id),))
            self.db.commit()
            await outbox.send(acknowledge(record.event, self.keys))
        elif isinstance(data, ClientErased):
            self.db.execute("DELETE FROM cases WHERE client_id = ?", (str(data.client_id),))
            self.db.commit()
            await outbox.send(acknowledge(record.event, self.keys))
        elif isinstance(data, ReferralRevoked):
            # The sender withdrew the referral: the appointment is cancelled (no answer is due).
            self.db.execute("UPDATE cases SET status = 'closed' WHERE referral_id = ? AND status = 'booked'", (str(data.referral_id),))
            self.db.commit()
        # Other records (deadlines, corrections) this tool does not use.

    def book(self, record: InboxRecord) -> Any:
        """Files the case with the first free slot (or finds it, when the record comes again) and returns the
        acceptance with that appointment."""
        data = record.event.data
        assert isinstance(data, PartnerReferralV2)
        row = self.db.execute("SELECT appointment FROM cases WHERE referral_id = ?", (str(data.referral_id),)).fetchone()
        if row is None:
            personal = record.opened.personal_data if record.opened else None
            who = personal.identity if personal else None
            contact = personal.contact if personal else None
            notes = record.opened.notes if record.opened else None
            slot = self.free_slot()
            self.db.execute(
                "INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, 'booked', NULL)",
                (
                    str(data.referral_id),
                    str(data.client_id),
                    f"{who.given_name} {who.family_name}" if who else None,
                    contact.email if contact else None,
                    contact.preferred_language if contact else None,
                    notes.reason if notes else None,
                    slot.isoformat(),
                ),
            )
            self.db.commit()
        else:
            slot = datetime.fromisoformat(row["appointment"])
        return accept(record.event, appointment_at=slot)

    def free_slot(self) -> datetime:
        taken = {r["appointment"] for r in self.db.execute("SELECT appointment FROM cases")}
        day = self.first_day or (datetime.now(BERLIN).date() + timedelta(days=1))
        while True:
            if day.weekday() < 4:
                for t in SLOTS:
                    slot = datetime.combine(day, t, BERLIN).astimezone(UTC)
                    if slot.isoformat() not in taken:
                        return slot
            day += timedelta(days=1)

    # ------------------------------------------------------------ after the appointment
    async def complete(self, referral_id: str, outcome: str, outbox: Outbox) -> None:
        row = self.db.execute("SELECT client_id, status FROM cases WHERE referral_id = ?", (referral_id,)).fetchone()
        if row is None or row["status"] != "booked":
            raise LookupError(f"no open case for referral {referral_id}")
        await outbox.send(complete((uuid.UUID(row["client_id"]), uuid.UUID(referral_id), self.org), outcome=outcome))
        self.db.execute("UPDATE cases SET status = 'completed', outcome = ? WHERE referral_id = ?", (outcome, referral_id))
        self.db.commit()

    def cases(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM cases ORDER BY appointment")]


# ---------------------------------------------------------------- command line
def transport(args: argparse.Namespace) -> Transport:
    if args.gateway:
        from lotse_partner.https import HttpsTransport, OidcToken

        # Secrets come from the environment, never from the command line (it shows in `ps`).
        if args.username:  # a partner-system user (the local stack's demo users), password grant
            form = {
                "grant_type": "password",
                "client_id": args.client_id,
                "username": args.username,
                "password": os.environ["LOTSE_PARTNER_PASSWORD"],
            }
        else:  # a partner-system client of its own, client-credentials grant
            form = {"grant_type": "client_credentials", "client_id": args.client_id, "client_secret": os.environ["LOTSE_CLIENT_SECRET"]}
        return HttpsTransport(args.gateway, ORG, OidcToken(args.token_url, form))
    return KafkaTransport(
        kafka_options(args.credentials), ORG, group="counselling-tool", start="latest" if getattr(args, "from_now", False) else "earliest"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--org", default=ORG, help=f"the welfare association (default {ORG}; the demo network's HTTPS one is awo-kreis-paderborn)"
    )
    ap.add_argument("--db", type=Path, default=Path("counselling.sqlite"))
    ap.add_argument("--keys", type=Path, default=Path("keys.json"), help="the association's private keys (lotse_partner.PartnerKeys)")
    ap.add_argument("--dead-letters", type=Path, default=Path("dead-letters"))
    ap.add_argument("--credentials", type=Path, help="Kafka credentials file (default partner-<org>.properties)")
    ap.add_argument("--gateway", help="the gateway's base URL: use HTTPS instead of Kafka")
    ap.add_argument("--token-url", help="the identity provider's token endpoint (HTTPS)")
    ap.add_argument(
        "--client-id",
        default="lotse-cli",
        help="the OIDC client: Caritas's own (secret in LOTSE_CLIENT_SECRET) or, with --username, a public one",
    )
    ap.add_argument("--username", help="a partner-system user instead of a client (password in LOTSE_PARTNER_PASSWORD)")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="read the inbox and answer, until Ctrl-C")
    run.add_argument("--from-now", action="store_true", help="Kafka, first start only: skip what the inbox already holds")
    sub.add_parser("cases", help="list the cases")
    done = sub.add_parser("complete", help="complete a case with an outcome")
    done.add_argument("referral_id")
    done.add_argument("--outcome", required=True)
    args = ap.parse_args()
    args.credentials = args.credentials or Path(f"partner-{args.org}.properties")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tool = CounsellingTool(args.db, PartnerKeys.load(args.keys), args.org)
    if args.command == "cases":
        for case in tool.cases():
            print(case)
    elif args.command == "complete":
        out = transport(args)

        async def _complete() -> None:
            try:
                await tool.complete(args.referral_id, args.outcome, out)
            finally:
                await out.stop()

        asyncio.run(_complete())
    else:
        inbox = PartnerInbox(transport(args), tool.keys, tool.handle, DeadLetters(args.dead_letters))
        asyncio.run(inbox.run_until_signalled())


if __name__ == "__main__":
    main()
