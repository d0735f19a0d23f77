"""What was sent against what landed, once the system is quiet after a scenario.

Sources of truth, all read from outside the services: PostgreSQL (the audit log, intake's referrals, consent's
consents and decisions, notifications' rows), the partner inbox and dead-letter topics read back from Kafka as
the provisioning principal, the mail sink's maildir and the webhook receiver's record (by event id at the receiver).

Counted per scenario:

- **accepted**: HTTP requests answered 2xx (referrals, consents, withdrawals, deadlines; load.py's ledger);
- **lost**: an accepted request with no entry in the audit log; a consented referral (sent while the client's
  consent stood) absent from its partner inbox; a referral without a consent decision;
- **duplicated** (effects): a request logged under two different event ids; a referral in an inbox under two
  event ids; a notification row twice for one trigger and recipient; an e-mail or webhook received twice with
  one id; a referral in an inbox after the client's effective withdrawal is listed as `after_withdrawal`;
- **copies**: the same event (same id) on a topic more than once, e.g. an outbox row published again after a
  crash between Kafka's acknowledgement and the row's deletion. Consumers deduplicate them by event id
  (`processed_events`), so they are no duplicated effect; they are counted and listed, not hidden;
- **reordered**: per client and partner inbox, a referral that arrived before one intake had sent earlier;
- **malformed**: every injected record on `<topic>.dlq` once per consuming subscription, with a reason (and, for
  the audit service, which logs every record instead of dead-lettering, in the audit log as not an event);
- **Merkle**: the latest signed tree head's signature, its root recomputed from every recorded leaf hash with
  the audit service's own code, and each new entry's bytes against its leaf hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import e2e
from bench.chaos.env import CHAOS_DIR, CLUSTER_CREDENTIALS
from bench.chaos.load import Ledger
from contracts import decode, topics
from lotse_kit.kafka import KafkaConnection
from lotse_kit.settings import KitSettings

# Request kind -> (topic, event type, data field holding the request's id)
AUDITED: dict[str, tuple[str, str, str]] = {
    "referral": (topics.REFERRALS, "lotse.referral.sent", "referral_id"),
    "consent": (topics.CONSENTS, "lotse.consent.granted", "consent_id"),
    "withdrawal": (topics.CONSENTS, "lotse.consent.withdrawn", "consent_id"),
    "deadline": (topics.DEADLINES, "lotse.deadline.registered", "deadline_id"),
}
MAILDIR = CHAOS_DIR / "mail"
LIST_AT_MOST = 20  # findings listed per kind in the JSON (all are counted)


def admin_kafka() -> dict[str, Any]:
    return KafkaConnection.from_properties(CLUSTER_CREDENTIALS / "lotse-admin.properties").aiokafka()


def inbox_topics() -> list[str]:
    ns = KitSettings().topic_namespace
    return [ns + topics.partner_inbox(o) for o in e2e.PARTNERS]


@dataclass
class Marks:
    """Where things stood when a scenario began: read back from here."""

    started: float  # epoch seconds
    audit_idx: int
    offsets: dict[str, dict[int, int]]  # topic -> partition -> end offset then
    mail: set[str]


@dataclass
class Findings:
    accepted: int = 0
    lost: int = 0
    duplicated: int = 0
    copies: int = 0
    reordered: int = 0
    after_withdrawal: int = 0
    malformed_injected: int = 0
    malformed_missing: int = 0
    malformed_no_reason: int = 0
    merkle_ok: bool | None = None
    merkle: str = ""
    details: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, Any] = field(default_factory=dict)

    def note(self, kind: str, item: Any) -> None:
        if len(self.details[kind]) < LIST_AT_MOST:
            self.details[kind].append(item)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.after_withdrawal == 0
            and self.malformed_missing == 0
            and self.malformed_no_reason == 0
            and self.merkle_ok is not False
        )


async def end_offsets(topic_names: list[str]) -> dict[str, dict[int, int]]:
    c = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **admin_kafka())
    await c.start()
    try:
        out: dict[str, dict[int, int]] = {}
        for t in topic_names:
            parts = c.partitions_for_topic(t)
            if not parts:
                await c._client.force_metadata_update()  # aiokafka has no public metadata wait
                parts = c.partitions_for_topic(t) or set()
            tps = [TopicPartition(t, p) for p in sorted(parts)]
            ends = await c.end_offsets(tps) if tps else {}
            out[t] = {tp.partition: off for tp, off in ends.items()}
        return out
    finally:
        await c.stop()


async def read_range(since: dict[str, dict[int, int]]) -> list[Any]:
    """Every record of the topics in `since` from those offsets up to their end offsets now, in partition order."""
    now = await end_offsets(list(since))
    c = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_bytes=8 << 20, **admin_kafka())
    await c.start()
    out: list[Any] = []
    try:
        want = {
            TopicPartition(t, p): (since[t].get(p, 0), end)
            for t, parts in now.items()
            for p, end in parts.items()
            if end > since[t].get(p, 0)
        }
        if not want:
            return out
        c.assign(list(want))
        for tp, (start, _) in want.items():
            c.seek(tp, start)
        left = dict(want)
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            batch = await c.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < want[tp][1]:
                        out.append(r)
                if recs and recs[-1].offset + 1 >= want[tp][1]:
                    left.pop(tp, None)
        return out
    finally:
        await c.stop()


def maildir_ids(exclude: set[str] | None = None) -> tuple[Counter[str], set[str]]:
    """Message-IDs of the mails the sink filed (not those in `exclude`, file names seen before)."""
    ids: Counter[str] = Counter()
    files: set[str] = set()
    parser = email.parser.BytesHeaderParser()
    for sub in ("new", "cur"):
        d = MAILDIR / sub
        if not d.exists():
            continue
        for f in d.iterdir():
            files.add(f.name)
            if exclude and f.name in exclude:
                continue
            try:
                with f.open("rb") as fh:
                    msg = parser.parse(fh)
            except OSError:
                continue
            ids[str(msg.get("Message-ID", f.name))] += 1
    return ids, files


class Db:
    """One connection to the suite's database that survives PostgreSQL restarts (scenario 4): a call on a
    connection the server closed connects again and runs once more (every call here is a read)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def _open(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            deadline = time.monotonic() + 120
            while True:
                try:
                    self.conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "bench-chaos"})
                    break
                except (OSError, asyncpg.PostgresError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1.0)
        return self.conn

    async def _call(self, name: str, *args: Any) -> Any:
        for attempt in (1, 2):
            conn = await self._open()
            try:
                return await getattr(conn, name)(*args)
            except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError, OSError):
                if attempt == 2:
                    raise
                with contextlib.suppress(Exception):
                    await conn.close()
                self.conn = None
        raise AssertionError("unreachable")

    async def fetch(self, *args: Any) -> list[Any]:
        out: list[Any] = await self._call("fetch", *args)
        return out

    async def fetchval(self, *args: Any) -> Any:
        return await self._call("fetchval", *args)

    async def fetchrow(self, *args: Any) -> Any:
        return await self._call("fetchrow", *args)

    async def connection(self) -> asyncpg.Connection:
        return await self._open()

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()


class Checker:
    def __init__(self, db: Db, malformed_topics: list[str]) -> None:
        self.db = db
        self.malformed_topics = malformed_topics

    async def mark(self) -> Marks:
        idx = await self.db.fetchval("SELECT coalesce(max(idx), -1) FROM audit.audit_log")
        watched = inbox_topics() + [topics.dlq(t) for t in self.malformed_topics]
        _, files = maildir_ids()
        return Marks(time.time(), idx, await end_offsets(watched), files)

    # ------------------------------------------------------------ quiet
    async def wait_quiet(self, ledger: Ledger, marks: Marks, timeout_s: float = 180.0, still_s: float = 6.0) -> float:
        """Until every accepted request is in the audit log, every referral has a consent decision and the audit log
        has not grown for `still_s` (or timeout_s). Returns the seconds waited."""
        t0 = time.monotonic()
        referrals = [a.id for a in ledger.accepted if a.kind == "referral"]
        last_idx, still_since = -2, time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            idx = await self.db.fetchval("SELECT coalesce(max(idx), -1) FROM audit.audit_log")
            if idx != last_idx:
                last_idx, still_since = idx, time.monotonic()
            decided = await self.db.fetchval(
                "SELECT count(DISTINCT referral_id) FROM consent.disclosures WHERE referral_id = ANY($1::uuid[])", referrals
            )
            found = await self._audited(ledger, marks)
            logged = sum(1 for a in ledger.accepted if (a.kind, a.id) in found)  # found also holds the clients' first consents
            if decided >= len(referrals) and logged >= len(ledger.accepted) and time.monotonic() - still_since >= still_s:
                break
            await asyncio.sleep(1.0)
        return time.monotonic() - t0

    async def _audited(self, ledger: Ledger, marks: Marks) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """(kind, id) -> [(event id, audit index)] for the ledger's requests logged since the scenario began."""
        clients = sorted({a.client_id for a in ledger.accepted})
        out: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
        for kind, (topic, etype, fld) in AUDITED.items():
            rows = await self.db.fetch(
                """SELECT idx, event_id, convert_from(entry, 'UTF8')::jsonb -> 'data' ->> $4 AS rid
                     FROM audit.audit_log
                    WHERE idx > $1 AND topic = $2 AND event_type = $3 AND client_id = ANY($5::text[])""",
                marks.audit_idx,
                KitSettings().topic_namespace + topic,
                etype,
                fld,
                clients,
            )
            for r in rows:
                out[(kind, r["rid"])].append((r["event_id"], r["idx"]))
        return out

    # ------------------------------------------------------------ the check
    async def check(self, ledger: Ledger, marks: Marks, injected: dict[str, list[tuple[int, int]]], webhook: Any = None) -> Findings:
        f = Findings(accepted=len(ledger.accepted))
        f.counts["accepted_by_kind"] = dict(Counter(a.kind for a in ledger.accepted))
        f.counts["not_accepted"] = dict(ledger.refused)
        await self._check_audit(f, ledger, marks)
        await self._check_inboxes(f, ledger, marks)
        await self._check_notifications(f, marks, webhook)
        await self._check_malformed(f, marks, injected)
        await self._check_merkle(f, marks)
        return f

    async def _check_audit(self, f: Findings, ledger: Ledger, marks: Marks) -> None:
        found = await self._audited(ledger, marks)
        for a in ledger.accepted:
            entries = found.get((a.kind, a.id), [])
            ids = {e for e, _ in entries}
            if not entries:
                f.lost += 1
                f.note("lost_in_audit", {"kind": a.kind, "id": a.id, "client_id": a.client_id})
            elif len(ids) > 1:
                f.duplicated += 1
                f.note("duplicated_in_audit", {"kind": a.kind, "id": a.id, "event_ids": sorted(ids)})
            elif len(entries) > 1:
                f.copies += len(entries) - 1
                f.note("copies_in_audit", {"kind": a.kind, "id": a.id, "event_id": entries[0][0], "indexes": [i for _, i in entries]})

    async def _check_inboxes(self, f: Findings, ledger: Ledger, marks: Marks) -> None:
        referrals = {a.id: a for a in ledger.accepted if a.kind == "referral"}
        rows = await self.db.fetch(
            "SELECT referral_id::text AS rid, client_id::text AS cid, to_org, sent_at FROM intake.referrals WHERE referral_id = ANY($1::uuid[])",
            list(referrals),
        )
        sent = {r["rid"]: r for r in rows}
        clients = sorted({a.client_id for a in ledger.accepted})
        withdrawn: dict[str, Any] = {}
        for r in await self.db.fetch(
            "SELECT client_id::text AS cid, min(withdrawn_at) AS at FROM consent.consents WHERE client_id = ANY($1::uuid[]) AND withdrawn_at IS NOT NULL GROUP BY 1",
            clients,
        ):
            withdrawn[r["cid"]] = r["at"]
        decisions = {
            r["rid"]: r
            for r in await self.db.fetch(
                "SELECT referral_id::text AS rid, outcome, decided_at FROM consent.disclosures WHERE referral_id = ANY($1::uuid[])",
                list(referrals),
            )
        }
        # What landed: every record on the three inboxes since the scenario began, read back as the provisioning principal.
        recs = await read_range({t: marks.offsets.get(t, {}) for t in inbox_topics()})
        seen: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)  # referral -> [(event id, topic, partition, offset)]
        order: dict[tuple[str, str], list[str]] = defaultdict(list)  # (topic, client) -> referrals in offset order
        withdrawal_at_offset: dict[tuple[str, str], tuple[int, int]] = {}
        undecodable = 0
        for r in sorted(recs, key=lambda r: (r.topic, r.partition, r.offset)):
            try:
                env = decode(r.headers, r.value)
            except Exception:
                undecodable += 1
                continue
            data = env.data
            rid = getattr(data, "referral_id", None)
            cid = str(getattr(data, "client_id", "") or "")
            if env.type == "lotse.consent.withdrawn":
                withdrawal_at_offset.setdefault((r.topic, cid), (r.partition, r.offset))
                continue
            if env.type != "lotse.referral.sent" or rid is None or str(rid) not in referrals:
                continue
            rid = str(rid)
            if not seen[rid]:
                order[(r.topic, cid)].append(rid)
            seen[rid].append((str(env.id), r.topic, r.partition, r.offset))
            w = withdrawal_at_offset.get((r.topic, cid))
            if w is not None and (r.partition, r.offset) > w:
                f.after_withdrawal += 1
                f.note("inbox_after_forwarded_withdrawal", {"referral_id": rid, "client_id": cid, "topic": r.topic, "offset": r.offset})
        f.counts["inbox_records_read"] = len(recs)
        f.counts["inbox_undecodable"] = undecodable
        for rid, a in referrals.items():
            s = sent.get(rid)
            copies = seen.get(rid, [])
            w_at = withdrawn.get(a.client_id)
            if s is None:
                f.lost += 1
                f.note("accepted_but_not_in_intake", rid)
                continue
            d = decisions.get(rid)
            if d is None:
                f.lost += 1
                f.note("no_consent_decision", {"referral_id": rid, "client_id": a.client_id})
                continue
            consented = w_at is None or s["sent_at"] < w_at
            ids = {e for e, *_ in copies}
            if w_at is not None and copies and s["sent_at"] >= w_at:
                f.after_withdrawal += 1
                f.note(
                    "inbox_after_withdrawal",
                    {"referral_id": rid, "client_id": a.client_id, "sent_at": str(s["sent_at"]), "withdrawn_at": str(w_at)},
                )
            if w_at is not None and copies and d["decided_at"] >= w_at:
                f.after_withdrawal += 1
                f.note("disclosed_after_withdrawal", {"referral_id": rid, "decided_at": str(d["decided_at"]), "withdrawn_at": str(w_at)})
            if consented and w_at is None and not copies:
                f.lost += 1
                f.note("lost_in_inbox", {"referral_id": rid, "client_id": a.client_id, "to_org": s["to_org"], "decision": d["outcome"]})
            if len(ids) > 1:
                f.duplicated += 1
                f.note("duplicated_in_inbox", {"referral_id": rid, "records": copies})
            elif len(copies) > 1:
                f.copies += len(copies) - 1
                f.note("copies_in_inbox", {"referral_id": rid, "records": copies})
        # Per-client order in each inbox against the order intake sent them.
        for item in reorderings(order, {rid: (a.sent, a.at) for rid, a in referrals.items()}):
            f.reordered += 1
            f.note("reordered", item)
        f.counts["withdrawn_clients"] = len(withdrawn)

    async def _check_notifications(self, f: Findings, marks: Marks, webhook: Any) -> None:
        from datetime import UTC, datetime

        since = datetime.fromtimestamp(marks.started, UTC)
        rows = await self.db.fetch(
            """SELECT trigger_event_id::text AS t, recipient_key, channel, count(*) AS n FROM notifications.notifications
                WHERE created_at >= $1 GROUP BY 1, 2, 3 HAVING count(*) > 1""",
            since,
        )
        for r in rows:
            f.duplicated += 1
            f.note("notification_twice_for_one_trigger", dict(r))
        f.counts["notifications_created"] = await self.db.fetchval(
            "SELECT count(*) FROM notifications.notifications WHERE created_at >= $1", since
        )
        ids, _ = maildir_ids(exclude=marks.mail)
        f.counts["mails_received"] = sum(ids.values())
        for mid, n in ids.items():
            if n > 1:
                f.duplicated += 1
                f.note("mail_received_twice", {"message_id": mid, "times": n})
        if webhook is not None:
            await self._check_webhooks(f, marks, webhook)

    async def wait_webhooks(self, endpoint_id: str, timeout_s: float = 240.0) -> float | None:
        """Seconds until no notification for the endpoint waits to be delivered (None: still some after timeout_s)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            pending = await self.db.fetchval(
                "SELECT count(*) FROM notifications.notifications WHERE endpoint_id = $1::uuid AND status IN ('created', 'sending')",
                endpoint_id,
            )
            if pending == 0:
                return time.monotonic() - t0
            await asyncio.sleep(1.0)
        return None

    async def _check_webhooks(self, f: Findings, marks: Marks, sink: Any) -> None:
        """At the receiver, by id: each notification for the endpoint answered 200 exactly once, and no trigger event
        delivered under two notifications."""
        from datetime import UTC, datetime

        deliveries = await sink.deliveries()
        ok = [d for d in deliveries if d.status == 200 and d.verified]
        by_webhook = Counter(d.webhook_id for d in ok)
        by_event: dict[str, set[str]] = defaultdict(set)
        for d in ok:
            if d.event_id:
                by_event[d.event_id].add(d.webhook_id)
        f.counts["webhook_attempts"] = len(deliveries)
        f.counts["webhook_attempts_by_status"] = dict(Counter(str(d.status) for d in deliveries))
        f.counts["webhooks_delivered"] = len(by_webhook)
        f.counts["webhook_unverified"] = sum(1 for d in deliveries if not d.verified)
        for wid, n in by_webhook.items():
            if n > 1:
                f.duplicated += 1
                f.note("webhook_received_twice", {"webhook_id": wid, "times": n})
        for eid, wids in by_event.items():
            if len(wids) > 1:
                f.duplicated += 1
                f.note("webhook_event_twice", {"event_id": eid, "webhook_ids": sorted(wids)})
        rows = await self.db.fetch(
            """SELECT id::text AS id, trigger_event_id::text AS t, status, attempts, reason FROM notifications.notifications
                WHERE endpoint_id = $1::uuid AND created_at >= $2""",
            sink.endpoint_id,
            datetime.fromtimestamp(marks.started, UTC),
        )
        delivered_ids = {d.notification_id for d in ok} | set(by_webhook)
        f.counts["webhook_notifications"] = len(rows)
        f.counts["webhook_notifications_by_status"] = dict(Counter(r["status"] for r in rows))
        f.counts["webhook_attempts_per_notification_max"] = max((r["attempts"] for r in rows), default=0)
        for r in rows:
            if r["id"] not in delivered_ids:
                f.lost += 1
                f.note(
                    "webhook_never_delivered",
                    {"notification_id": r["id"], "status": r["status"], "attempts": r["attempts"], "reason": r["reason"]},
                )

    async def _check_malformed(self, f: Findings, marks: Marks, injected: dict[str, list[tuple[int, int]]]) -> None:
        if not injected:
            return
        expected = expected_dlq_consumers()
        dlqs = {topics.dlq(t): marks.offsets.get(topics.dlq(t), {}) for t in injected}
        recs = await read_range(dlqs)
        got: dict[tuple[str, int, int], Counter[str]] = defaultdict(Counter)
        no_reason = 0
        for r in recs:
            h = {k: v.decode(errors="replace") for k, v in r.headers}
            key = (
                h.get("lotse_dlq_original_topic", ""),
                int(h.get("lotse_dlq_original_partition", -1)),
                int(h.get("lotse_dlq_original_offset", -1)),
            )
            got[key][h.get("lotse_dlq_consumer", "?")] += 1
            if not h.get("lotse_dlq_reason"):
                no_reason += 1
        f.malformed_no_reason = no_reason
        per_topic: dict[str, dict[str, int]] = {}
        for t, positions in injected.items():
            want = expected.get(t, 0)
            missing = dup = 0
            for p, o in positions:
                consumers = got.get((t, p, o), Counter())
                f.malformed_injected += 1
                if len(consumers) < want:
                    missing += 1
                    f.note("malformed_not_on_dlq", {"topic": t, "partition": p, "offset": o, "dead_lettered_by": sorted(consumers)})
                dup += sum(n - 1 for n in consumers.values() if n > 1)
            # The audit service logs every record, malformed ones as entries that are not events.
            logged = await self.db.fetchval(
                """SELECT count(*) FROM audit.audit_log WHERE idx > $1 AND topic = $2 AND kind <> 'event'
                      AND ("partition", "offset") IN (SELECT * FROM unnest($3::int[], $4::bigint[]))""",
                marks.audit_idx,
                t,
                [p for p, _ in positions],
                [o for _, o in positions],
            )
            f.malformed_missing += missing
            per_topic[t] = {
                "injected": len(positions),
                "dlq_consumers_expected": want,
                "missing_on_dlq": missing,
                "dlq_copies": dup,
                "in_audit_log": logged,
            }
            if logged < len(positions):
                f.malformed_missing += len(positions) - logged
                f.note("malformed_not_in_audit_log", {"topic": t, "logged": logged, "injected": len(positions)})
        f.counts["malformed"] = per_topic

    async def _check_merkle(self, f: Findings, marks: Marks) -> None:
        from services.audit.domain import merkle
        from services.audit.domain.tree_head import TreeHead, public_key_from_raw, signature_valid

        head_row = await self.db.fetchrow(
            "SELECT tree_size, timestamp_ms, root_hash, signature, key_id, public_key FROM audit.tree_heads ORDER BY tree_size DESC, id DESC LIMIT 1"
        )
        if head_row is None:
            f.merkle_ok, f.merkle = False, "no signed tree head"
            return
        head = TreeHead(**dict(head_row))
        if not signature_valid(head, public_key_from_raw(head.public_key)):
            f.merkle_ok, f.merkle = False, f"the tree head of size {head.tree_size} has an invalid signature"
            return
        tree = merkle.StreamingRoot()
        n = 0
        conn = await self.db.connection()
        async with conn.transaction(readonly=True):
            async for r in conn.cursor(
                "SELECT idx, leaf_hash FROM audit.audit_log WHERE idx < $1 ORDER BY idx", head.tree_size, prefetch=20000
            ):
                if r["idx"] != n:
                    f.merkle_ok, f.merkle = False, f"entry {n} is missing"
                    return
                tree.add_leaf_hash(bytes(r["leaf_hash"]))
                n += 1
        root = tree.root()
        bad = await self.db.fetch(
            "SELECT idx, entry, leaf_hash FROM audit.audit_log WHERE idx > $1 AND idx < $2 ORDER BY idx", marks.audit_idx, head.tree_size
        )
        wrong = [r["idx"] for r in bad if merkle.leaf_hash(bytes(r["entry"])) != bytes(r["leaf_hash"])]
        if n != head.tree_size or root != head.root_hash:
            f.merkle_ok, f.merkle = False, f"the root over {n} leaves does not match the tree head of size {head.tree_size}"
        elif wrong:
            f.merkle_ok, f.merkle = False, f"entries whose bytes do not match their leaf hash: {wrong[:10]}"
        else:
            f.merkle_ok, f.merkle = True, f"tree head of size {head.tree_size} verifies ({len(bad)} new entries re-hashed)"


def reorderings(order: dict[tuple[str, str], list[str]], window: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """Each place where, in one inbox and for one client, a referral arrived right before one whose request had been
    answered before the other's was sent. `order`: (topic, client) -> referral ids in offset order; `window`: referral
    id -> (sent, answered), epoch seconds. Requests that overlapped in time have no order to keep and are not counted."""
    out = []
    for (topic, cid), rids in order.items():
        for prev, cur in itertools.pairwise(rids):
            if prev in window and cur in window and window[cur][1] < window[prev][0]:
                out.append(
                    {
                        "topic": topic,
                        "client_id": cid,
                        "arrived_first": prev,
                        "sent_first": cur,
                        "answered_before_the_other_was_sent_ms": round((window[prev][0] - window[cur][1]) * 1000),
                    }
                )
    return out


def expected_dlq_consumers(services: Sequence[str] | None = None) -> dict[str, int]:
    """Topic -> how many kit subscriptions read it (each dead-letters a malformed record once; the audit ingest logs it),
    for `services` (default: those the suite runs on the cluster)."""
    import importlib
    import re

    from bench.chaos.env import present_services

    out: dict[str, int] = defaultdict(int)
    for svc in present_services() if services is None else services:
        try:
            mod = importlib.import_module(f"services.{svc}.entrypoints.consumers")
        except ImportError:
            continue
        decl = getattr(mod, "DECLARATION", None)
        for sub in getattr(decl, "subscriptions", ()):
            if sub.custom:
                continue
            for ch in sub.channels:
                out[ch] += 1
    # Templated channels (partner.{orgId}.outbox.v1) stand for every concrete topic matching them.
    for ch in [c for c in out if "{" in c]:
        rx = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^.]+", re.escape(ch)) + "$")
        out[f"__pattern__{rx.pattern}"] = out.pop(ch)
    return _Expect(out)


class _Expect(dict[str, int]):
    def get(self, topic: str, default: int = 0) -> int:  # type: ignore[override]
        import re

        n = dict.get(self, topic, 0)
        for k, v in self.items():
            if k.startswith("__pattern__") and re.match(k[len("__pattern__") :], topic):
                n += v
        return n or default


def to_json(f: Findings) -> dict[str, Any]:
    return {
        "accepted": f.accepted,
        "lost": f.lost,
        "duplicated": f.duplicated,
        "copies": f.copies,
        "reordered": f.reordered,
        "after_withdrawal": f.after_withdrawal,
        "malformed_injected": f.malformed_injected,
        "malformed_missing": f.malformed_missing,
        "malformed_without_reason": f.malformed_no_reason,
        "merkle_ok": f.merkle_ok,
        "merkle": f.merkle,
        "ok": f.ok,
        "counts": f.counts,
        "details": {k: v for k, v in f.details.items() if v},
    }


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2)


__all__ = ["Checker", "Findings", "Marks", "Path", "to_json"]
