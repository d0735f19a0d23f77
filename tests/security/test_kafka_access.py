"""Kafka access control against the real broker: SASL_SSL with SCRAM-SHA-512, deny by default, ACLs from provisioning.

Each test module provisions its own namespace (principals, ACLs, quotas and topics named with it)
with `lotse_kit.provisioning`, exactly as `lotse admin provision` does for the demo district, and
then tries, as each principal, what it must and must not be able to do.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from contracts import topics
from lotse_cli.admin import service_grants
from lotse_kit.kafka import KafkaConnection, admin_client
from lotse_kit.network import KafkaQuota, Network, load_network
from lotse_kit.provisioning import (
    describe_user_quotas,
    desired_state,
    partner_principal,
    provision,
    service_principal,
)
from tests.infra import Infra, _drop_test_principals
from tests.kafka_helpers import eventually

NETWORK = Path(__file__).resolve().parents[2] / "services" / "intake" / "tests" / "network.yaml"
CARITAS = "caritas-paderborn"
JOBCENTER = "jobcenter-kreis-paderborn"
KI = "ki-kreis-paderborn"


def needs_secure_broker(admin: KafkaConnection) -> None:
    if admin.security_protocol != "SASL_SSL":
        pytest.skip("the broker is an open PLAINTEXT one (testcontainers); access control needs the local stack")


class Provisioned:
    def __init__(self, admin: KafkaConnection, namespace: str, directory: Path, network: Network) -> None:
        self.admin, self.ns, self.dir, self.network = admin, namespace, directory, network

    def creds(self, principal: str) -> KafkaConnection:
        return KafkaConnection.from_properties(self.dir / f"{principal}.properties")

    def partner(self, org: str) -> KafkaConnection:
        return self.creds(partner_principal(self.ns, org))

    def service(self, name: str) -> KafkaConnection:
        return self.creds(service_principal(self.ns, name))

    def topic(self, logical: str) -> str:
        return self.ns + logical

    async def run(self, network: Network | None = None, **kw: Any) -> list[str]:
        want = desired_state(network or self.network, service_grants(), namespace=self.ns)
        return [str(c) for c in (await provision(self.admin, want, self.dir, **kw)).changes]


@pytest.fixture
async def prov(infra: Infra, tmp_path: Path, unique: str) -> AsyncIterator[Provisioned]:
    admin = KafkaConnection.from_env(infra.kafka_bootstrap)
    needs_secure_broker(admin)
    p = Provisioned(admin, f"t{unique}.", tmp_path / "credentials", load_network(NETWORK))
    await p.run()
    yield p
    # Leave no principals behind: an empty network in this namespace removes the partners, their ACLs and
    # quotas (provisioning's own removal path); the session's cleanup drops the services' principals.
    await p.run(p.network.model_copy(update={"organisations": []}), delete_topics=True)
    await _drop_test_principals(infra, [unique])


# ------------------------------------------------------------------ helpers
async def produce(conn: KafkaConnection, topic: str, value: bytes = b"{}") -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, request_timeout_ms=10_000, **conn.aiokafka())
    try:
        await asyncio.wait_for(producer.start(), 20)
        await asyncio.wait_for(producer.send_and_wait(topic, value=value, headers=[("ce_type", b"lotse.test")]), 20)
    finally:
        await producer.stop()


async def consume(conn: KafkaConnection, topic: str, group: str | None, *, want: int = 1, timeout: float = 15.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, request_timeout_ms=10_000, **conn.aiokafka()
    )
    got: list[bytes] = []
    try:
        await asyncio.wait_for(consumer.start(), 20)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < want and loop.time() < deadline:
            for recs in (await consumer.getmany(timeout_ms=300)).values():
                got += [r.value for r in recs]
        if group is not None and got:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def refused(coro: Any, *errors: type[BaseException]) -> BaseException:
    with pytest.raises(errors or (TopicAuthorizationFailedError,)) as info:
        await coro
    return info.value


# ------------------------------------------------------------------ partners
async def test_a_partner_reads_its_inbox_and_writes_its_outbox_and_nothing_else(prov: Provisioned) -> None:
    caritas = prov.partner(CARITAS)
    # Its own inbox (filled by the platform, here the admin) and its own outbox, with its own group.
    await produce(prov.admin, prov.topic(topics.partner_inbox(CARITAS)), b'{"for":"caritas"}')
    assert await consume(caritas, prov.topic(topics.partner_inbox(CARITAS)), f"{prov.ns}partner.{CARITAS}.reader") == [b'{"for":"caritas"}']
    await produce(caritas, prov.topic(topics.partner_outbox(CARITAS)))

    # Another partner's inbox, any lotse.* topic, the personal-data topic: not readable.
    await produce(prov.admin, prov.topic(topics.partner_inbox(JOBCENTER)), b'{"for":"jobcenter"}')
    for topic in (topics.partner_inbox(JOBCENTER), topics.CLIENTS, topics.DISCLOSURE_REQUESTS, topics.partner_outbox(JOBCENTER)):
        await refused(consume(caritas, prov.topic(topic), f"{prov.ns}partner.{CARITAS}.reader"), TopicAuthorizationFailedError)
    # Another partner's outbox (answering referrals in its name), its own inbox, any lotse.* topic: not writable.
    for topic in (topics.partner_outbox(JOBCENTER), topics.partner_inbox(CARITAS), topics.REFERRALS, topics.DISCLOSURES):
        await refused(produce(caritas, prov.topic(topic)), TopicAuthorizationFailedError)
    # Another partner's consumer group, or a group outside its prefix, even on its own inbox.
    for group in (f"{prov.ns}partner.{JOBCENTER}.reader", f"{prov.ns}lotse-intake_x-partner-answers", f"{prov.ns}partner.{CARITAS}"):
        await refused(consume(caritas, prov.topic(topics.partner_inbox(CARITAS)), group), GroupAuthorizationFailedError)


async def test_a_partner_cannot_see_other_topics_exist(prov: Provisioned) -> None:
    admin = admin_client(prov.partner(CARITAS))
    await admin.start()
    try:
        visible = {t for t in await admin.list_topics() if t.startswith(prov.ns)}
    finally:
        await admin.close()
    assert visible == {prov.topic(topics.partner_inbox(CARITAS)), prov.topic(topics.partner_outbox(CARITAS))}


# ------------------------------------------------------------------ services
async def test_each_service_writes_only_the_topics_it_declares(prov: Provisioned) -> None:
    # The forgeries of the issue: lotse.referral.accepted from anyone but intake, lotse.disclosure.blocked
    # from anyone but consent, a partner inbox record from anyone but consent.
    await produce(prov.service("intake"), prov.topic(topics.REFERRALS))
    await produce(prov.service("consent"), prov.topic(topics.DISCLOSURES))
    await produce(prov.service("consent"), prov.topic(topics.partner_inbox(KI)))
    await produce(prov.service("notifications"), prov.topic(topics.NOTIFICATIONS))
    for service, topic in (
        ("consent", topics.REFERRALS),
        ("consent", topics.CLIENTS),
        ("notifications", topics.DISCLOSURES),
        ("notifications", topics.partner_inbox(KI)),
        ("intake", topics.DISCLOSURES),
        ("intake", topics.partner_inbox(KI)),
        ("intake", topics.CONSENTS),
    ):
        await refused(produce(prov.service(service), prov.topic(topic)), TopicAuthorizationFailedError)
    # The audit log writes nothing at all: the broker refuses it even a producer id.
    for topic in (topics.CLIENTS, topics.partner_outbox(KI)):
        await refused(produce(prov.service("audit"), prov.topic(topic)), TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


async def test_only_the_consent_gate_and_the_audit_log_read_the_personal_data_topic(prov: Provisioned) -> None:
    await produce(prov.service("intake"), prov.topic(topics.DISCLOSURE_REQUESTS), b'{"pd":1}')
    assert await consume(prov.service("consent"), prov.topic(topics.DISCLOSURE_REQUESTS), f"{prov.ns}lotse-consent-gate")
    assert await consume(prov.service("audit"), prov.topic(topics.DISCLOSURE_REQUESTS), f"{prov.ns}lotse-audit-ingest")
    for service in ("intake", "notifications"):
        await refused(
            consume(prov.service(service), prov.topic(topics.DISCLOSURE_REQUESTS), f"{prov.ns}lotse-{service}-x"),
            TopicAuthorizationFailedError,
        )
    # A service's groups are its own: consent cannot join intake's.
    await refused(
        consume(prov.service("consent"), prov.topic(topics.CLIENTS), f"{prov.ns}lotse-intake-partner-answers"),
        GroupAuthorizationFailedError,
    )


# ------------------------------------------------------------------ authentication
async def test_wrong_password_plaintext_and_an_untrusted_certificate_are_rejected(prov: Provisioned, tmp_path: Path) -> None:
    caritas = prov.partner(CARITAS)
    wrong = caritas.as_user(caritas.username or "", "not-the-password")
    with pytest.raises(KafkaConnectionError):
        await produce(wrong, prov.topic(topics.partner_outbox(CARITAS)))
    # The client port speaks TLS only: a plaintext client gets no answer it can use.
    plain = KafkaConnection(bootstrap=caritas.bootstrap, security_protocol="PLAINTEXT")
    with pytest.raises((KafkaConnectionError, asyncio.TimeoutError)):
        await produce(plain, prov.topic(topics.partner_outbox(CARITAS)))
    # A client that trusts another CA refuses the broker's certificate (no silent downgrade).
    from lotse_kit.tls import ensure_server_certificate

    ensure_server_certificate(tmp_path / "other-ca", "x", ["127.0.0.1"])
    foreign = KafkaConnection(
        bootstrap=caritas.bootstrap, username=caritas.username, password=caritas.password, ca_file=tmp_path / "other-ca" / "ca.pem"
    )
    with pytest.raises(KafkaConnectionError):
        await produce(foreign, prov.topic(topics.partner_outbox(CARITAS)))


# ------------------------------------------------------------------ provisioning
async def test_provisioning_is_idempotent_and_removes_an_organisation_that_left(
    prov: Provisioned, caplog: pytest.LogCaptureFixture
) -> None:
    assert await prov.run() == []  # nothing to do the second time
    files = sorted(prov.dir.glob("*.properties"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(prov.dir.stat().st_mode) == 0o700

    ki_before = prov.partner(KI)
    await produce(ki_before, prov.topic(topics.partner_outbox(KI)))
    smaller = prov.network.model_copy(update={"organisations": [o for o in prov.network.organisations if o.id != KI]})
    with caplog.at_level(logging.DEBUG):
        changes = await prov.run(smaller)
    ki = partner_principal(prov.ns, KI)
    assert f"- principal {ki}" in changes
    assert any(c.startswith(f"- acl {ki}:") for c in changes)
    assert f"- quota {ki}" in changes
    assert any(c.startswith(f"= topic {prov.topic(topics.partner_inbox(KI))}") for c in changes)  # kept, with its records
    assert any(
        c.startswith(f"- acl {service_principal(prov.ns, 'consent')}: WRITE topic {prov.topic(topics.partner_inbox(KI))}") for c in changes
    )
    assert not (prov.dir / f"{ki}.properties").exists()
    # Its credentials no longer work.
    with pytest.raises(KafkaConnectionError):
        await produce(ki_before, prov.topic(topics.partner_outbox(KI)))
    # No password of any principal appears in what provisioning said or logged.
    said = "\n".join(changes) + "\n" + caplog.text
    for f in prov.dir.glob("*.properties"):
        assert prov.creds(f.stem).password not in said
    # Back in the network: a new principal with a new password.
    changes = await prov.run()
    assert f"+ principal {ki} (password in {prov.dir / (ki + '.properties')})" in changes
    await produce(prov.partner(KI), prov.topic(topics.partner_outbox(KI)))


async def _quota_of(prov: Provisioned, org: str) -> dict[str, float] | None:
    return (await describe_user_quotas(prov.admin)).get(partner_principal(prov.ns, org))


async def _quota_matches(prov: Provisioned, org: str, want: dict[str, float]) -> bool:
    return await _quota_of(prov, org) == want


async def test_quotas_come_from_the_network_file(prov: Provisioned) -> None:
    default = prov.network.kafka.partner_quota
    expected = {"producer_byte_rate": float(default.producer_byte_rate), "consumer_byte_rate": float(default.consumer_byte_rate)}
    # Brokers apply quota changes from the metadata log a moment after the controller accepted them.
    await eventually(lambda: _quota_of(prov, CARITAS), timeout=10)
    assert await _quota_of(prov, CARITAS) == expected
    own = KafkaQuota(producer_byte_rate=4096, consumer_byte_rate=8192)
    orgs = [o.model_copy(update={"kafka_quota": own}) if o.id == CARITAS else o for o in prov.network.organisations]
    changes = await prov.run(prov.network.model_copy(update={"organisations": orgs}))
    assert changes == [f"~ quota {partner_principal(prov.ns, CARITAS)}: producer_byte_rate=4096, consumer_byte_rate=8192"]
    want = {"producer_byte_rate": 4096.0, "consumer_byte_rate": 8192.0}
    await eventually(lambda: _quota_of(prov, CARITAS), timeout=10)
    assert await eventually(lambda: _quota_matches(prov, CARITAS, want), timeout=10)
    # A partner over its rate is throttled by the broker: 64 KiB at 4 KiB/s takes seconds, not milliseconds.
    caritas = prov.partner(CARITAS)
    producer = AIOKafkaProducer(acks="all", **caritas.aiokafka())
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(16):
            await producer.send_and_wait(prov.topic(topics.partner_outbox(CARITAS)), value=b"x" * 4096)
        elapsed = loop.time() - t0
    finally:
        await producer.stop()
    assert elapsed > 3.0, f"16 x 4 KiB at 4 KiB/s took only {elapsed:.2f}s: the quota is not enforced"


async def test_rotation_gives_a_new_password_and_the_old_one_stops_working(prov: Provisioned) -> None:
    old = prov.partner(CARITAS)
    changes = await prov.run(rotate=[partner_principal(prov.ns, CARITAS)])
    assert changes == [
        f"~ credentials {partner_principal(prov.ns, CARITAS)} (new password in {prov.dir / (partner_principal(prov.ns, CARITAS) + '.properties')})"
    ]
    new = prov.partner(CARITAS)
    assert new.password != old.password
    await produce(new, prov.topic(topics.partner_outbox(CARITAS)))
    with pytest.raises(KafkaConnectionError):
        await produce(old, prov.topic(topics.partner_outbox(CARITAS)))


def test_every_acl_names_a_provisioned_topic_and_partners_get_exactly_three_rights() -> None:
    want = desired_state(load_network(NETWORK), service_grants(), namespace="")
    for org in load_network(NETWORK).org_ids():
        rights = sorted(str(a) for a in want.acls if a.principal == partner_principal("", org))
        assert rights == [
            f"partner-{org}: READ group partner.{org}.*",
            f"partner-{org}: READ topic partner.{org}.inbox.v1",
            f"partner-{org}: WRITE topic partner.{org}.outbox.v1",
        ]
    writers = {a.principal for a in want.acls if a.resource == "TOPIC" and a.operation == "WRITE" and a.name == topics.CLIENTS}
    assert writers == {"lotse-intake"}
    writers = {a.principal for a in want.acls if a.resource == "TOPIC" and a.operation == "WRITE" and a.name == topics.DISCLOSURES}
    assert writers == {"lotse-consent"}
    readers = {a.principal for a in want.acls if a.resource == "TOPIC" and a.operation == "READ" and a.name == topics.DISCLOSURE_REQUESTS}
    assert readers == {"lotse-consent", "lotse-audit"}


def test_the_cli_dry_run_prints_the_plan_and_changes_nothing(infra: Infra, tmp_path: Path, unique: str) -> None:
    from typer.testing import CliRunner

    from lotse_cli.main import app

    admin = KafkaConnection.from_env(infra.kafka_bootstrap)
    needs_secure_broker(admin)
    ns = f"d{unique}."
    args = ["admin", "provision", "--network", str(NETWORK), "--namespace", ns, "--credentials-dir", str(tmp_path), "--dry-run"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"+ principal {partner_principal(ns, CARITAS)}" in out.output
    assert f"+ acl {partner_principal(ns, CARITAS)}: READ topic {ns}{topics.partner_inbox(CARITAS)}" in out.output
    assert "would change" in out.output
    assert not list(tmp_path.glob("*.properties"))  # nothing written, nothing created

    async def visible() -> set[str]:
        client = admin_client(admin)
        await client.start()
        try:
            return {t for t in await client.list_topics() if t.startswith(ns)}
        finally:
            await client.close()

    assert asyncio.run(visible()) == set()
