"""Consumer batches: CPU per event with the handlers' outbox rows collected into one statement per batch, against
each `enqueue` writing at once (the kit before), alternated in the same run.

    python -m bench.consumer_batch                       # batches of 1, 5, 20; 600 events per variant and round, 3 rounds
    python -m bench.consumer_batch --sizes 1,20 --events 2000 --rounds 5 --json
    python -m bench.consumer_batch --enqueues 1            # every handler enqueues one event

What runs: the kit's `EventConsumer.handle_batch` (decode, the batch's `processed_events` insert, the handlers in one
transaction, commit) on records built in memory, so Kafka's fetch and offset commit (the same for both variants)
are left out. The handler of each event inserts one row of its own and enqueues 1-3 events (cycling: 2 on average)
with one `Outbox.enqueue` call each, as the services' handlers do (consent's gate: the partner's copy, then
`lotse.disclosure.made`). Own schema (the kit's migrations) and role, removed afterwards; the pool has one
connection, so one PostgreSQL backend does all the work and its CPU is read from /proc (utime + stime of that
backend: what the statements cost the server, not the WAL writer's share of the commits, the same for both).

Variants (`EventConsumer(collect_outbox=...)`), alternated within each round, the order flipped every round:

- **each**: every `enqueue` is its own `INSERT ... SELECT pg_notify(...)` round trip (the kit before).
- **collected**: the rows are collected while the batch runs and written in one statement before it commits.

Figures: microseconds of CPU per event (this process's `time.process_time`, the backend's /proc time), statements
per event (asyncpg query logger, in a separate unmeasured pass), and collected / each as ratios (medians over the
rounds). The outbox and the other tables are emptied between runs, outside the measured window.

On the 2-core development machine (shared, busy; 1,500 events x 5 rounds, two runs), collected / each, Python +
backend CPU per event: 1-3 events per handler: batches of 1 0.94-0.95 (6 -> 5 statements per event), of 5
0.61-0.63 (3.65 -> 1.80), of 20 0.54-0.61 (3.16 -> 1.20); one event per handler: batches of 1 1.02 (5 statements
either way: noise), of 5 0.78, of 20 0.67.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from contracts import Envelope, encode, new_event
from contracts.events import ClientRegistered
from lotse_kit import db
from lotse_kit.consumer import EventConsumer
from lotse_kit.declaration import Publication, ServiceDeclaration
from lotse_kit.kafka import KafkaConnection
from lotse_kit.outbox import Outbox
from lotse_kit.settings import KitSettings

TOPIC = "bench.consumer-batch.v1"
HANDLED = "lotse.client.registered"
EFFECTS = db.Migration(
    "bench:001_effects",
    "CREATE TABLE effects (event_id uuid PRIMARY KEY, client_id uuid NOT NULL, note text NOT NULL);\n"
    "GRANT SELECT, INSERT ON effects TO {{role}};\n",
)
DECLARATION = ServiceDeclaration(
    "benchconsumer",
    "Consumer batch bench",
    "Consumes and produces lotse.client.registered.",
    publications=(Publication(TOPIC, (HANDLED,)),),
)


def registered(client_id: uuid.UUID, org: str = "jobcenter-paderborn") -> Envelope[ClientRegistered]:
    data = ClientRegistered(
        client_id=client_id, registering_org=org, responsible_org=org, preferred_language="uk", registered_at=datetime.now(UTC)
    )
    return new_event(data, source="/lotse/bench", acting_org=org)


def records(n: int, offset: int) -> list[ConsumerRecord]:
    """n records of `lotse.client.registered`, 20 per client key, as the consumer gets them from a poll."""
    out = []
    client = uuid.uuid4()
    for i in range(n):
        if i % 20 == 0:
            client = uuid.uuid4()
        rec = encode(registered(client))
        out.append(ConsumerRecord(TOPIC, 0, offset + i, 0, 0, rec.key, rec.value, None, 0, len(rec.value), list(rec.headers)))
    return out


class Handler:
    """One effect row and 1-3 events (cycling; or `fixed` events), each through its own `Outbox.enqueue` call."""

    def __init__(self, outbox: Outbox, fixed: int = 0) -> None:
        self.outbox = outbox
        self.fixed = fixed
        self.calls = 0

    async def __call__(self, env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        self.calls += 1
        await conn.execute("INSERT INTO effects (event_id, client_id, note) VALUES ($1, $2, $3)", env.id, env.data.client_id, env.type)
        for _ in range(self.fixed or self.calls % 3 + 1):
            data = env.data.model_copy(update={"registering_org": "caritas-paderborn", "responsible_org": "caritas-paderborn"})
            await self.outbox.enqueue(conn, new_event(data, source="/lotse/bench", acting_org="caritas-paderborn"), TOPIC)


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, settings: KitSettings, schema: str, enqueues: int = 0) -> None:
        self.settings = settings
        self.enqueues = enqueues
        self.schema = schema
        self.role = f"lotse_{schema}"
        self.password = uuid.uuid4().hex
        self.pool: asyncpg.Pool | None = None
        self.backend = 0
        self.offset = 0

    async def setup(self) -> None:
        await db.provision(
            self.settings.database_url,
            schema=self.schema,
            role=self.role,
            password=self.password,
            migrations=[*db.load_migrations("kit", db.KIT_MIGRATIONS), EFFECTS],
        )
        dsn = db.service_dsn(self.settings.database_url, self.role, self.password)
        # As db.create_pool, with one connection that the pool never replaces (by default after 50,000 queries).
        self.pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=1,
            max_queries=2**31 - 1,
            server_settings={"search_path": self.schema, "application_name": "bench-consumer-batch"},
            reset=db._keep_session,
        )

    async def cleanup(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {db.ident(self.schema)} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS {db.ident(self.role)}")
        finally:
            await conn.close()

    def consumer(self, collect: bool) -> EventConsumer:
        assert self.pool is not None
        pool = self.pool
        return EventConsumer(
            service="benchconsumer",
            name=f"bench-{'collected' if collect else 'each'}",
            pool_getter=lambda: pool,
            bootstrap=KafkaConnection("127.0.0.1:1", security_protocol="PLAINTEXT"),  # never connected: nothing is dead-lettered
            handlers={HANDLED: Handler(Outbox(DECLARATION), self.enqueues)},
            topics=[TOPIC],
            collect_outbox=collect,
        )

    async def empty(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)  # the tables' owner (the service role may not truncate)
        try:
            s = db.ident(self.schema)
            await conn.execute(f"TRUNCATE {s}.outbox, {s}.effects, {s}.processed_events")
        finally:
            await conn.close()

    async def run(self, collect: bool, size: int, events: int) -> tuple[float, float]:
        """(process CPU s, backend CPU s) for `events` events in batches of `size`."""
        consumer = self.consumer(collect)
        batches = [records(size, self.offset + i) for i in range(0, events, size)]
        self.offset += events
        await self.empty()
        assert self.pool is not None
        self.backend = await self.pool.fetchval("SELECT pg_backend_pid()")  # the pool's one connection
        cpu0, be0 = time.process_time(), backend_cpu_s(self.backend)
        for batch in batches:
            await consumer.handle_batch(batch)
        cpu, be = time.process_time() - cpu0, backend_cpu_s(self.backend) - be0
        assert consumer.fallbacks == 0
        assert await self.pool.fetchval("SELECT pg_backend_pid()") == self.backend, "the pool replaced its connection"
        return cpu, be

    async def statements(self, collect: bool, size: int) -> float:
        """Statements per event (BEGIN and COMMIT included), in an unmeasured pass of a few batches."""
        assert self.pool is not None
        seen: list[str] = []

        def logged(query: Any) -> None:
            seen.append(query.query)

        consumer = self.consumer(collect)
        events = size * 4
        await self.empty()
        async with self.pool.acquire() as conn:  # the pool's one connection: the consumer's too
            conn.add_query_logger(logged)
        try:
            for i in range(0, events, size):
                await consumer.handle_batch(records(size, self.offset + i))
        finally:
            async with self.pool.acquire() as conn:
                conn.remove_query_logger(logged)
        self.offset += events
        # asyncpg's transaction() sends BEGIN and COMMIT through execute() too: they are logged as statements.
        return len(seen) / events


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = KitSettings()
    bench = Bench(settings, f"bench_consumer_{uuid.uuid4().hex[:8]}", args.enqueues)
    await bench.setup()
    results: dict[str, Any] = {"events_per_run": args.events, "rounds": args.rounds, "sizes": {}}
    try:
        for size in args.sizes:
            await bench.run(True, size, min(args.events, 100))  # warm-up: prepared statements, caches
            await bench.run(False, size, min(args.events, 100))
            per: dict[str, list[tuple[float, float]]] = {"each": [], "collected": []}
            for r in range(args.rounds):
                order = [False, True] if r % 2 == 0 else [True, False]
                for collect in order:
                    cpu, be = await bench.run(collect, size, args.events)
                    per["collected" if collect else "each"].append((cpu / args.events * 1e6, be / args.events * 1e6))
            row: dict[str, Any] = {}
            for name, runs in per.items():
                row[name] = {
                    "python_us": round(statistics.median(c for c, _ in runs), 1),
                    "postgres_us": round(statistics.median(b for _, b in runs), 1),
                    "statements_per_event": round(await bench.statements(name == "collected", size), 2),
                }
            ratios = [
                (c[0] / e[0] if e[0] else 0.0, c[1] / e[1] if e[1] else 0.0, (c[0] + c[1]) / (e[0] + e[1]) if e[0] + e[1] else 0.0)
                for c, e in zip(per["collected"], per["each"], strict=True)
            ]
            row["ratio_python"] = round(statistics.median(p for p, _, _ in ratios), 3)
            row["ratio_postgres"] = round(statistics.median(b for _, b, _ in ratios), 3)
            row["ratio_total"] = round(statistics.median(t for _, _, t in ratios), 3)
            results["sizes"][str(size)] = row
            if not args.json:
                e, c = row["each"], row["collected"]
                print(
                    f"batch {size:>3}: each {e['python_us']:>7.1f} + {e['postgres_us']:>6.1f} us/event ({e['statements_per_event']:.2f} stmts)"
                    f" | collected {c['python_us']:>7.1f} + {c['postgres_us']:>6.1f} us/event ({c['statements_per_event']:.2f} stmts)"
                    f" | collected/each: python {row['ratio_python']:.2f}, postgres {row['ratio_postgres']:.2f},"
                    f" total {row['ratio_total']:.2f}",
                    flush=True,
                )
    finally:
        await bench.cleanup()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5, 20], help="batch sizes (1,5,20)")
    parser.add_argument("--events", type=int, default=600, help="events per variant and round (600)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each variant once per round (3)")
    parser.add_argument("--enqueues", type=int, default=0, help="events each handler enqueues (default: 1-3, cycling)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
