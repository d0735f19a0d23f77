"""The typed consumer of an organisation's inbox, the same over Kafka and over HTTPS.

    async def handle(record: InboxRecord, outbox: Outbox) -> None:
        if isinstance(record.event.data, PartnerReferralV2):
            await outbox.send(accept(record.event))

    inbox = PartnerInbox(KafkaTransport.from_properties(creds, org), keys, handle, DeadLetters(Path("dlq")))
    await inbox.run()          # or: HttpsTransport(gateway_url, org, token)

For every record, in order: it decodes the CloudEvent into its contract model (`contracts`), opens the
sealed personal data with the organisation's keys (`open_sealed`), calls the handler, and only after the
handler returned commits it (per fetched batch, once each of its records was handled; Kafka: the offset of
the partner's consumer group; HTTPS: the gateway's acknowledgement of the cursor). So a crash in between delivers the record again: handlers are
at-least-once, and the answer helpers give each answer a stable event id so that Lotse applies it once.

What the partner cannot read (not a CloudEvent, no contract for its type, schema-invalid, sealed to a key it
does not have) or what the handler refuses (`raise Rejected(reason)`) is dead-lettered on the partner's
side: written to `DeadLetters` (one JSON file per record, mode 0600, in a directory only the partner's
system reads) before the record is committed, with the reason. A partner principal may write nothing but
its outbox on Lotse's Kafka, so the dead letters stay with the partner. Any other exception from the
handler is retried (`retries` times, with backoff) and then stops the consumer with the record uncommitted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from contracts import DecodeError, Envelope
from contracts.events import SealedContent
from contracts.sealed import SealedError

from .inbox import open_sealed
from .keys import PartnerKeys

log = logging.getLogger("lotse_partner")


class Rejected(Exception):
    """Raised by a handler for a record it can never process: the record is dead-lettered with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """One record as a transport fetched it, not yet decoded.

    `position` is where it is (Kafka: `topic/partition/offset`; HTTPS: the gateway's cursor); `original` is
    what arrived, kept verbatim for the dead-letter file."""

    position: str
    decode: Callable[[], Envelope[Any]]
    original: Mapping[str, Any]
    received_at: float = field(default_factory=time.time)  # epoch seconds when the transport fetched it


@dataclass(frozen=True)
class InboxRecord:
    """A decoded inbox record: the CloudEvent with its contract model as `event.data`, and the personal data
    sealed to the organisation, opened (None for records that carry none: withdrawals, erasures, deadlines)."""

    event: Envelope[Any]
    opened: SealedContent | None
    position: str
    received_at: float = 0.0  # epoch seconds when the transport fetched it (before decoding)


class Outbox(Protocol):
    """Where a handler's answers go: `partner.<org>.outbox.v1` (Kafka) or the gateway's outbox (HTTPS)."""

    async def send(self, *events: Envelope[Any]) -> None: ...


class Transport(Outbox, Protocol):
    org: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fetch(self, max_records: int) -> Sequence[Delivery]:
        """The next records (possibly none after a wait of about a second)."""
        ...

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Marks `deliveries` (a fetched batch's first records, in order) and everything before them as done."""
        ...


Handler = Callable[[InboxRecord, Outbox], Awaitable[None]]


class DeadLetterSink(Protocol):
    """Where records the partner cannot read go; must have kept the record durably when `put` returns."""

    def put(self, delivery: Delivery, kind: str, reason: str) -> object: ...


class DeadLetters:
    """The partner-side dead-letter queue: one JSON file per record in `directory` (0700; files 0600, since a
    record may hold sealed personal data). Written and flushed to disk before the record is committed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, delivery: Delivery, kind: str, reason: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = datetime.now(UTC)
        doc = {
            "position": delivery.position,
            "kind": kind,
            "reason": reason,
            "dead_lettered_at": now.isoformat(),
            "original": delivery.original,
        }
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in delivery.position)[-120:]
        path = self.directory / f"{now:%Y%m%dT%H%M%S%f}-{safe}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        return path

    def list(self) -> list[dict[str, Any]]:
        """The dead letters kept, oldest first."""
        if not self.directory.exists():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.directory.glob("*.json"))]


def bytes_field(value: bytes | None) -> str | None:
    """A record value for a dead-letter file: its text if it is UTF-8, else `base64:<...>`."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


@dataclass
class PartnerInbox:
    """Reads the organisation's inbox through `transport` and hands each record to `handler` (see the module)."""

    transport: Transport
    keys: PartnerKeys | None
    handler: Handler
    dead_letters: DeadLetterSink
    retries: int = 5
    retry_backoff_s: float = 0.5
    batch: int = 100
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    handled: int = 0
    dead_lettered: int = 0

    async def run(self, stop: asyncio.Event | None = None, *, limit: int | None = None) -> None:
        """Until `stop` is set (or `limit` records were handled or dead-lettered). Setting `stop` lets the record
        being handled finish and be committed; cancelling the task leaves it uncommitted (it comes again)."""
        stop = stop or asyncio.Event()
        await self.transport.start()
        self.ready.set()
        try:
            while not stop.is_set() and not self._reached(limit):
                done: list[Delivery] = []
                try:
                    for delivery in await self.transport.fetch(self.batch):
                        await self.process(delivery)
                        done.append(delivery)
                        if stop.is_set() or self._reached(limit):
                            break
                finally:
                    # What was handled or dead-lettered is committed, also when the next record's handler failed.
                    if done:
                        await self.transport.commit(done)
        finally:
            await self.transport.stop()

    async def run_until_signalled(self) -> None:
        """`run` until SIGINT (Ctrl-C) or SIGTERM: the record being handled finishes and is committed first."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.run(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _reached(self, limit: int | None) -> bool:
        return limit is not None and self.handled + self.dead_lettered >= limit

    async def process(self, delivery: Delivery) -> None:
        """One record: decode, open, handle; or dead-letter. `run` commits it after this returned."""
        try:
            env = delivery.decode()
        except DecodeError as exc:
            return await self._dead_letter(delivery, exc.kind, exc.reason)
        try:
            opened = open_sealed(env, self.keys) if self.keys is not None else None
        except SealedError as exc:
            return await self._dead_letter(delivery, "unsealable", str(exc), env)
        record = InboxRecord(env, opened, delivery.position, delivery.received_at)
        for attempt in range(1, self.retries + 2):
            try:
                await self.handler(record, self.transport)
                break
            except Rejected as exc:
                return await self._dead_letter(delivery, "rejected", exc.reason, env)
            except Exception:
                if attempt > self.retries:
                    log.exception(
                        "the handler failed; stopping with the record uncommitted",
                        extra={"event_id": str(env.id), "client_id": env.client_id, "position": delivery.position},
                    )
                    raise
                log.warning(
                    "the handler failed; retrying",
                    exc_info=True,
                    extra={"event_id": str(env.id), "client_id": env.client_id, "attempt": attempt},
                )
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
        self.handled += 1
        log.info("handled %s", env.type, extra={"event_id": str(env.id), "client_id": env.client_id, "type": env.type})

    async def _dead_letter(self, delivery: Delivery, kind: str, reason: str, env: Envelope[Any] | None = None) -> None:
        where = self.dead_letters.put(delivery, kind, reason)
        self.dead_lettered += 1
        log.warning(
            "dead-lettered on the partner's side (%s): %s",
            kind,
            reason,
            extra={
                "event_id": str(env.id) if env else None,
                "client_id": env.client_id if env else None,
                "kind": kind,
                "reason": reason,
                "where": str(where),
            },
        )
