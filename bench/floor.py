"""The floor pipeline: the hops of a Lotse referral with empty business logic, for bench.e2e to compare with.

    python -m bench.floor                      # the floor alone, stepped like bench.e2e (services not needed)
    python -m bench.floor --rates 50,100 --step-seconds 20

Built from the libraries and with the security settings the services use, and nothing else:

1. **api** (FastAPI under uvicorn, uvloop/httptools, gc.freeze() as `lotse_kit.serve` does): the same
   route, `POST /v1/clients/{id}/referrals`, with the same body parsed by a pydantic model and the
   caller's bearer token verified by `lotse_kit.auth` (the Keycloak realm's keys, the same checks);
   then one PostgreSQL transaction (asyncpg pool) writing one outbox row and a `pg_notify`;
   answers 201 with the referral id. In the same process, as in the services, a relay: LISTEN on a
   dedicated connection, select a batch in id order, publish it with an idempotent `acks=all`
   aiokafka producer over SASL_SSL/SCRAM-SHA-512, delete the published rows.
2. **consumer** (aiokafka): per record one transaction that inserts the `processed_events` row
   (consumer, event id) and, if it was new, one outbox row for the partner topic; offsets committed
   after each batch's transactions. Its own relay publishes to the partner topic.
3. **partner**: reads the partner topic and reports when each referral arrived (the same JSON lines
   as `bench._partner`).

Each role is its own process (`python -m bench.floor api|consumer|partner --config FILE`) and its own
Kafka principal with exactly the ACLs it needs, created for the run by the provisioning principal and
removed afterwards together with the topics and the PostgreSQL schema.

What the floor leaves out is what Lotse adds: CloudEvents envelopes and their validation, the consent
decision over HTTP, the intake→consent disclosure hop and sealing, notifications, the audit log,
Prometheus metrics, JSON logs and access policies beyond one role check.
"""

# No `from __future__ import annotations`: FastAPI resolves the route's annotations at run time.
import argparse
import asyncio
import contextlib
import gc
import json
import logging
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lotse_kit import auth, problems
from lotse_kit.errors import Forbidden

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 3  # as every lotse.* and partner.* topic (contracts.topics.TopicSpec)
RELAY_BATCH = 200  # LOTSE_OUTBOX_BATCH_SIZE's default


@dataclass
class FloorConfig:
    """Everything a floor process needs; written to a 0600 file, as its Kafka password is in it."""

    run: str
    dsn: str
    schema: str
    bootstrap: str
    ca_file: str | None
    requests_topic: str
    partner_topic: str
    users: dict[str, str]  # role -> Kafka principal
    passwords: dict[str, str]
    port: int
    pad_bytes: int

    def kafka(self, role: str) -> Any:
        from lotse_kit.kafka import KafkaConnection

        return KafkaConnection(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            mechanism="SCRAM-SHA-512",
            username=self.users[role],
            password=self.passwords[role],
            ca_file=Path(self.ca_file) if self.ca_file else None,
        )

    def channel(self, role: str) -> str:
        return f"bench_floor_{self.run}_{role}"

    @property
    def group(self) -> str:
        return f"bench-floor-{self.run}-consumer"

    def save(self, path: Path) -> None:
        from lotse_kit.kafka import write_secret_file

        write_secret_file(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "FloorConfig":
        return cls(**json.loads(path.read_text()))


# ---------------------------------------------------------------- set-up and tear-down (provisioning principal)
# One outbox per process, as each service has its own (schema); one processed-events table for the consumer.
SCHEMA_SQL = """
CREATE TABLE api_outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid  NOT NULL,
    topic      text  NOT NULL,
    key        bytea,
    value      bytea NOT NULL,
    headers    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE consumer_outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid  NOT NULL,
    topic      text  NOT NULL,
    key        bytea,
    value      bytea NOT NULL,
    headers    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""


async def setup(port: int, pad_bytes: int = 1024) -> FloorConfig:
    """Creates the floor's topics, principals (SCRAM-SHA-512), ACLs and schema for one run."""
    import asyncpg

    from lotse_cli.admin import admin_connection
    from lotse_kit.provisioning import SCRAM_ITERATIONS, _confluent
    from lotse_kit.settings import KitSettings

    ck = _confluent()
    admin = admin_connection()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-floor-{run}"
    cfg = FloorConfig(
        run=run,
        dsn=KitSettings().database_url,
        schema=f"bench_floor_{run}",
        bootstrap=admin.bootstrap,
        ca_file=str(admin.ca_file) if admin.ca_file else None,
        requests_topic=f"{prefix}.requests",
        partner_topic=f"{prefix}.partner",
        users={r: f"{prefix}-{r}" for r in ("api", "consumer", "partner")},
        passwords={r: secrets.token_urlsafe(32) for r in ("api", "consumer", "partner")},
        port=port,
        pad_bytes=pad_bytes,
    )
    client = ck.AdminClient(admin.librdkafka() | {"client.id": "bench-floor-setup"})
    for f in client.create_topics([ck.NewTopic(t, PARTITIONS, 1) for t in (cfg.requests_topic, cfg.partner_topic)]).values():
        await asyncio.wrap_future(f)
    upserts = [
        ck.UserScramCredentialUpsertion(
            u, ck.ScramCredentialInfo(ck.ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), cfg.passwords[r].encode()
        )
        for r, u in cfg.users.items()
    ]
    for f in client.alter_user_scram_credentials(upserts).values():
        await asyncio.wrap_future(f)

    def acl(user: str, kind: str, name: str, op: str, pattern: str = "LITERAL") -> Any:
        return ck.AclBinding(
            ck.ResourceType[kind],
            name,
            ck.ResourcePatternType[pattern],
            f"User:{user}",
            "*",
            ck.AclOperation[op],
            ck.AclPermissionType.ALLOW,
        )

    u = cfg.users
    acls = [
        acl(u["api"], "TOPIC", cfg.requests_topic, "WRITE"),
        acl(u["consumer"], "TOPIC", cfg.requests_topic, "READ"),
        acl(u["consumer"], "GROUP", cfg.group, "READ"),
        acl(u["consumer"], "TOPIC", cfg.partner_topic, "WRITE"),
        acl(u["partner"], "TOPIC", cfg.partner_topic, "READ"),
    ]
    for f in client.create_acls(acls).values():
        await asyncio.wrap_future(f)
    conn = await asyncpg.connect(cfg.dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {cfg.schema}")
        await conn.execute(f"SET search_path TO {cfg.schema}; {SCHEMA_SQL}")
    finally:
        await conn.close()
    for r in cfg.users:
        await _await_login(cfg.kafka(r))
    return cfg


async def _await_login(conn: Any, timeout_s: float = 30.0) -> None:
    """New SCRAM credentials reach the broker a moment after the controller took them."""
    from aiokafka.errors import KafkaConnectionError

    from lotse_kit.kafka import admin_client

    deadline = time.monotonic() + timeout_s
    while True:
        client = admin_client(conn, client_id="bench-floor-login")
        try:
            await client.start()
            return
        except KafkaConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await client.close()


async def teardown(cfg: FloorConfig) -> None:
    """Removes what setup() created; each part on its own, so one failure does not leave the rest."""
    import asyncpg

    from lotse_cli.admin import admin_connection
    from lotse_kit.provisioning import _confluent

    ck = _confluent()
    client = ck.AdminClient(admin_connection().librdkafka() | {"client.id": "bench-floor-teardown"})
    errors: list[str] = []
    try:
        for f in client.delete_topics([cfg.requests_topic, cfg.partner_topic]).values():
            await asyncio.wrap_future(f)
    except Exception as exc:
        errors.append(f"topics: {exc}")
    try:
        filters = [
            ck.AclBindingFilter(
                ck.ResourceType.ANY, None, ck.ResourcePatternType.ANY, f"User:{u}", None, ck.AclOperation.ANY, ck.AclPermissionType.ANY
            )
            for u in cfg.users.values()
        ]
        for f in client.delete_acls(filters).values():
            await asyncio.wrap_future(f)
    except Exception as exc:
        errors.append(f"acls: {exc}")
    try:
        deletions = [ck.UserScramCredentialDeletion(u, ck.ScramMechanism.SCRAM_SHA_512) for u in cfg.users.values()]
        for f in client.alter_user_scram_credentials(deletions).values():
            await asyncio.wrap_future(f)
    except Exception as exc:
        errors.append(f"principals: {exc}")
    try:
        conn = await asyncpg.connect(cfg.dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {cfg.schema} CASCADE")
        finally:
            await conn.close()
    except Exception as exc:
        errors.append(f"schema: {exc}")
    if errors:
        print(f"(floor clean-up incomplete: {'; '.join(errors)})", file=sys.stderr)


# ---------------------------------------------------------------- the relay (api and consumer)
class Relay:
    """Publishes the role's outbox rows in id order, woken by NOTIFY (and a 1 s poll), deletes them once acknowledged;
    a failed batch is retried (the rows stay), as the services' relay does."""

    def __init__(self, cfg: FloorConfig, role: str, producer: Any) -> None:
        self.cfg, self.role, self.producer = cfg, role, producer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(
            self.cfg.dsn, server_settings={"search_path": self.cfg.schema, "application_name": f"bench-floor-{self.role}-relay"}
        )
        await self.conn.add_listener(self.cfg.channel(self.role), lambda *_: self._wake.set())
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        select = f"SELECT id, topic, key, value, headers FROM {self.role}_outbox ORDER BY id LIMIT $1"
        delete = f"DELETE FROM {self.role}_outbox WHERE id = ANY($1::bigint[])"
        while True:
            try:
                rows = await self.conn.fetch(select, RELAY_BATCH)
                if rows:
                    futures = [
                        await self.producer.send(
                            r["topic"],
                            value=r["value"],
                            key=r["key"],
                            headers=[(k, v.encode()) for k, v in json.loads(r["headers"]).items()],
                        )
                        for r in rows
                    ]
                    await asyncio.gather(*futures)
                    await self.conn.execute(delete, [r["id"] for r in rows])
                    if len(rows) == RELAY_BATCH:
                        continue
            except Exception as exc:
                print(f"relay {self.role}: {type(exc).__name__}: {exc}; retrying", file=sys.stderr, flush=True)
                await asyncio.sleep(1.0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.conn.close()


async def _producer(cfg: FloorConfig, role: str) -> Any:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(acks="all", enable_idempotence=True, client_id=cfg.users[role], **cfg.kafka(role).aiokafka())
    await p.start()
    return p


async def _pool(cfg: FloorConfig, role: str) -> Any:
    import asyncpg

    return await asyncpg.create_pool(
        cfg.dsn, min_size=1, max_size=10, server_settings={"search_path": cfg.schema, "application_name": f"bench-floor-{role}"}
    )


async def _enqueue(conn: Any, cfg: FloorConfig, role: str, event_id: uuid.UUID, topic: str, key: bytes, value: bytes) -> None:
    await conn.execute(
        f"INSERT INTO {role}_outbox (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5::jsonb)",
        event_id,
        topic,
        key,
        value,
        json.dumps({"ce_id": str(event_id)}),
    )
    await conn.execute("SELECT pg_notify($1, '')", cfg.channel(role))


# ---------------------------------------------------------------- role: api
class ReferralBody(BaseModel):
    """The fields of intake's SendReferralBody, as plain types: parsed, not acted on."""

    need: str | None = None
    to_org: str | None = None
    service: str | None = None
    reason: str | None = None
    categories: list[str] = Field(min_length=1)
    free_text: str | None = None


def build_api(cfg: FloorConfig) -> FastAPI:
    state: dict[str, Any] = {}
    pad = "x" * cfg.pad_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["pool"] = await _pool(cfg, "api")
        state["producer"] = await _producer(cfg, "api")
        state["relay"] = Relay(cfg, "api", state["producer"])
        await state["relay"].start()
        try:
            yield
        finally:
            await state["relay"].stop()
            await state["producer"].stop()
            await state["pool"].close()

    app = FastAPI(title="bench floor", lifespan=lifespan)
    problems.install(app)
    auth.install(app)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/clients/{client_id}/referrals", status_code=201)
    async def refer(client_id: uuid.UUID, body: ReferralBody, p: Annotated[auth.Principal, Depends(auth.principal)]) -> JSONResponse:
        if not p.has_role("caseworker") or not p.org:
            raise Forbidden("caseworkers only")
        referral_id = event_id = uuid.uuid4()
        value = orjson.dumps({"referral_id": str(referral_id), "client_id": str(client_id), "org": p.org, **body.model_dump(), "pad": pad})
        async with state["pool"].acquire() as conn, conn.transaction():
            await _enqueue(conn, cfg, "api", event_id, cfg.requests_topic, str(client_id).encode(), value)
        return JSONResponse({"referral_id": str(referral_id)}, status_code=201)

    return app


def run_api(cfg: FloorConfig) -> None:
    import uvicorn

    app = build_api(cfg)
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=cfg.port, log_config=None, access_log=False)


# ---------------------------------------------------------------- role: consumer
async def run_consumer(cfg: FloorConfig) -> None:
    from aiokafka import AIOKafkaConsumer

    pool = await _pool(cfg, "consumer")
    producer = await _producer(cfg, "consumer")
    relay = Relay(cfg, "consumer", producer)
    await relay.start()
    consumer = AIOKafkaConsumer(
        cfg.requests_topic, group_id=cfg.group, enable_auto_commit=False, auto_offset_reset="earliest", **cfg.kafka("consumer").aiokafka()
    )
    await consumer.start()
    stop = _stop_event()
    ready = False
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            if not ready and consumer.assignment():
                _emit({"ready": True})  # partitions assigned: what the api sends from now on is read
                ready = True
            for records in batch.values():
                for rec in records:
                    event_id = uuid.UUID(dict(rec.headers)["ce_id"].decode())
                    async with pool.acquire() as conn, conn.transaction():
                        new = await conn.execute(
                            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", cfg.group, event_id
                        )
                        if new == "INSERT 0 1":
                            data = orjson.loads(rec.value)
                            out_id = uuid.uuid4()
                            data["event_id"] = str(out_id)
                            await _enqueue(conn, cfg, "consumer", out_id, cfg.partner_topic, rec.key or b"", orjson.dumps(data))
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
        await relay.stop()
        await producer.stop()
        await pool.close()


# ---------------------------------------------------------------- role: partner
async def run_partner(cfg: FloorConfig) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100, **cfg.kafka("partner").aiokafka())
    await consumer.start()
    stop = _stop_event()
    try:
        parts = [TopicPartition(cfg.partner_topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        for tp in parts:
            await consumer.position(tp)
        _emit({"ready": True, "partitions": len(parts)})
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            arrived = time.time()
            for records in batch.values():
                for rec in records:
                    data = orjson.loads(rec.value)
                    _emit(
                        {
                            "referral_id": data["referral_id"],
                            "event_id": data["event_id"],
                            "t": arrived,
                            "kafka_ts": rec.timestamp / 1000,
                            "opened": True,
                        }
                    )
    finally:
        await consumer.stop()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    return stop


def _run_role(role: str, config: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    cfg = FloorConfig.load(config)
    if role == "api":
        run_api(cfg)
        return
    import uvloop

    uvloop.run(run_consumer(cfg) if role == "consumer" else run_partner(cfg))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("api", "consumer", "partner"):
        ap = argparse.ArgumentParser(prog="python -m bench.floor ROLE")
        ap.add_argument("role", choices=["api", "consumer", "partner"])
        ap.add_argument("--config", type=Path, required=True)
        a = ap.parse_args()
        _run_role(a.role, a.config)
        return 0
    from bench.e2e import main as e2e_main

    return e2e_main(["--floor-only", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
