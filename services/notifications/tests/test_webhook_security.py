"""Webhook secrets at rest, v1a signatures, where webhooks may go (SSRF) and TLS, against the real Kafka and
PostgreSQL, with loopback receivers over HTTP and HTTPS (certificates made here)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from standardwebhooks import Webhook

from contracts.topics import CLIENTS
from lotse_kit.clock import ManualClock
from lotse_kit.db import KIT_MIGRATIONS, load_migrations, provision
from lotse_kit.metrics import REGISTRY
from services.notifications.adapters.keys import signing_key_text
from services.notifications.bootstrap import MIGRATIONS
from services.notifications.handlers import rewrap_secrets
from tests.fixtures import as_org
from tests.kafka_helpers import eventually

from .conftest import CARITAS, TEST_KEK, TEST_KEK_ID, TEST_SIGNING_KEY, fast_settings, https_peer, make_ca, make_server_cert
from .test_bad_input import assert_refused
from .test_delivery import all_final, handed_over, register

AS_CARITAS = as_org(CARITAS)
PUBLIC_IP = "93.184.215.14"
UNDER_OLD_KEKS = "lotse_notifications_webhook_secrets_under_old_keks"


def signatures(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [tuple(s.split(",", 1)) for s in headers["webhook-signature"].split(" ")]  # type: ignore[misc]


def signed_content(req: Any) -> bytes:
    return f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body


def public_key(whpk: str) -> Ed25519PublicKey:
    assert whpk.startswith("whpk_")
    raw = base64.b64decode(whpk.removeprefix("whpk_"), validate=True)
    assert len(raw) == 32
    return Ed25519PublicKey.from_public_bytes(raw)


async def webhook_rows(svc: Any, trigger_id: uuid.UUID) -> dict[str, Any]:
    rows = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", trigger_id)
    return {str(r["endpoint_id"]): r for r in rows}


class FakeDns:
    """The egress guard's resolver: answers from `answers`, like a DNS server the endpoint's owner controls."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {host.replace("_", "."): ips for host, ips in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.answers:
            return self.answers[host]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# ---------------------------------------------------------------- secrets at rest
async def test_webhook_secrets_are_stored_encrypted_shown_once_and_never_logged(start_service, peer, admin_db, unique, caplog):
    caplog.set_level(logging.DEBUG)
    async with start_service() as svc:
        a = await register(svc, CARITAS, "/hooks/a", peer)
        b = await register(svc, CARITAS, "/hooks/b", peer)
        rotated = await svc.http.post(f"/v1/webhook-endpoints/{a['id']}/rotate-secret", headers=AS_CARITAS)
        assert rotated.status_code == 200
        secrets = [a["secret"], b["secret"], rotated.json()["secret"]]
        assert all(s.startswith("whsec_") for s in secrets) and len(set(secrets)) == 3

        # Read as the database administrator: no column holds a secret, in any encoding.
        schema = f"notif_{unique}"
        columns = {
            r["column_name"]
            for r in await admin_db.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'webhook_endpoints'", schema
            )
        }
        assert {"secret", "previous_secret"}.isdisjoint(columns)
        rows = await admin_db.fetch(f"SELECT row_to_json(w)::text AS as_json, w.* FROM {schema}.webhook_endpoints w")
        assert len(rows) == 2
        for secret in secrets:
            raw = base64.b64decode(secret.removeprefix("whsec_"))
            for row in rows:
                assert secret.removeprefix("whsec_") not in row["as_json"] and raw.hex() not in row["as_json"]
                for value in row.values():
                    if isinstance(value, bytes):
                        assert raw not in value and secret.encode() not in value
        by_id = {str(r["id"]): r for r in rows}
        assert by_id[a["id"]]["secret_kek_id"] == by_id[a["id"]]["previous_secret_kek_id"] == by_id[b["id"]]["secret_kek_id"] == TEST_KEK_ID
        nonces = [by_id[a["id"]]["secret_nonce"], by_id[a["id"]]["previous_secret_nonce"], by_id[b["id"]]["secret_nonce"]]
        assert all(len(n) == 12 for n in nonces) and len(set(nonces)) == 3

        # Never returned after creation: every GET, the list, the re-enable answer, the status API, the OpenAPI examples.
        answers = [
            await svc.http.get("/v1/webhook-endpoints", headers=AS_CARITAS),
            await svc.http.get(f"/v1/webhook-endpoints/{a['id']}", headers=AS_CARITAS),
            await svc.http.get(f"/v1/webhook-endpoints/{b['id']}", headers=AS_CARITAS),
            await svc.http.post(f"/v1/webhook-endpoints/{b['id']}/enable", headers=AS_CARITAS),
        ]

        # The sealed secrets still sign: A's request verifies with its old and its new secret, B's with its own.
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 3), timeout=60)
        [to_a], [to_b] = peer.at("/hooks/a"), peer.at("/hooks/b")
        assert Webhook(secrets[0]).verify(to_a.body, to_a.headers) and Webhook(secrets[2]).verify(to_a.body, to_a.headers)
        assert Webhook(secrets[1]).verify(to_b.body, to_b.headers)
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(secrets[1]).verify(to_a.body, to_a.headers)

        answers += [
            await svc.http.get("/v1/notifications", headers=AS_CARITAS),
            *[
                await svc.http.get(f"/v1/notifications/{r['id']}", headers=AS_CARITAS)
                for r in await svc.rows("trigger_event_id = $1", env.id)
            ],
            await svc.http.get("/openapi.json"),
        ]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        for r in answers:
            for secret in secrets:
                assert secret.removeprefix("whsec_") not in r.text

    logged = [r.getMessage() + " " + repr(r.__dict__) for r in caplog.records]
    assert any("webhook secret rotated" in line for line in logged)  # the log was captured, and...
    for secret in secrets:
        assert not [line for line in logged if secret.removeprefix("whsec_") in line]  # ...holds no secret


async def test_a_secret_copied_onto_another_endpoint_does_not_sign_for_it(start_service, peer, admin_db, unique):
    async with start_service() as svc:
        victim = await register(svc, CARITAS, "/hooks/victim", peer)
        other = await register(svc, CARITAS, "/hooks/other", peer)
        # Someone with write access to the table copies the victim's sealed secret onto an endpoint they control.
        await admin_db.execute(
            f"""UPDATE notif_{unique}.webhook_endpoints o
                   SET secret_kek_id = v.secret_kek_id, secret_nonce = v.secret_nonce, secret_ciphertext = v.secret_ciphertext
                  FROM notif_{unique}.webhook_endpoints v WHERE o.id = $1 AND v.id = $2""",
            uuid.UUID(other["id"]),
            uuid.UUID(victim["id"]),
        )
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 3), timeout=60)
        rows = await webhook_rows(svc, env.id)
        assert rows[victim["id"]]["status"] == "delivered"
        copied = rows[other["id"]]
        assert copied["status"] == "technical-failure" and "does not decrypt" in copied["reason"] and TEST_KEK_ID in copied["reason"]
        assert peer.at("/hooks/other") == []  # nothing went out signed with the victim's secret


async def test_kek_rotation_keeps_old_secrets_usable_and_re_wraps_them(start_service, peer, admin_db, unique):
    new_kek, new_kid = base64.b64encode(os.urandom(32)).decode(), "test-kek-2"

    async def kek_of(endpoint_id: str) -> str:
        return await admin_db.fetchval(f"SELECT secret_kek_id FROM notif_{unique}.webhook_endpoints WHERE id = $1", uuid.UUID(endpoint_id))

    async def deliver(svc: Any) -> dict[str, Any]:
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: _final_webhooks(svc, env.id), timeout=60)
        return await webhook_rows(svc, env.id)

    async with start_service() as svc:  # under the first KEK
        old = await register(svc, CARITAS, "/hooks/old", peer)
    assert await kek_of(old["id"]) == TEST_KEK_ID

    # The new KEK without the old one: the old secret cannot be opened, and the failure says which key is missing.
    async with start_service(secret_kek=new_kek, secret_kek_id=new_kid) as svc:
        rows = await deliver(svc)
        assert rows[old["id"]]["status"] == "technical-failure"
        assert f"'{TEST_KEK_ID}', which is not configured" in rows[old["id"]]["reason"]
    assert peer.at("/hooks/old") == []

    # The new KEK with the old one kept: old secrets open, new secrets are sealed under the new KEK, and the
    # re-wrap job moves the old ones over.
    async with start_service(secret_kek=new_kek, secret_kek_id=new_kid, secret_old_keks={TEST_KEK_ID: TEST_KEK}) as svc:
        new = await register(svc, CARITAS, "/hooks/new", peer)
        assert await kek_of(new["id"]) == new_kid
        rows = await deliver(svc)
        assert {rows[old["id"]]["status"], rows[new["id"]]["status"]} == {"delivered"}
        [to_old], [to_new] = peer.at("/hooks/old"), peer.at("/hooks/new")
        assert Webhook(old["secret"]).verify(to_old.body, to_old.headers)["data"]["to_org"] == CARITAS
        assert Webhook(new["secret"]).verify(to_new.body, to_new.headers)["data"]["to_org"] == CARITAS
        await eventually(lambda: _eq(kek_of(old["id"]), new_kid), timeout=30)
        await eventually(lambda: REGISTRY.get_sample_value(UNDER_OLD_KEKS, {"service": "notifications"}) == 0, timeout=30)

    # The old KEK removed: everything was re-wrapped, so everything still signs.
    async with start_service(secret_kek=new_kek, secret_kek_id=new_kid) as svc:
        rows = await deliver(svc)
        assert {r["status"] for r in rows.values()} == {"delivered"}
        to_old = peer.at("/hooks/old")[-1]
        assert Webhook(old["secret"]).verify(to_old.body, to_old.headers)


async def test_an_expired_previous_secret_is_not_kept(start_service, peer, admin_db, unique):
    clock = ManualClock()
    async with start_service(clock=clock, secret_rotation_overlap_s=60) as svc:
        ep = await register(svc, CARITAS, "/hooks/expiring", peer)
        assert (await svc.http.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=AS_CARITAS)).status_code == 200
        query = f"SELECT previous_secret_kek_id, previous_secret_ciphertext FROM notif_{unique}.webhook_endpoints WHERE id = $1"
        await rewrap_secrets(svc.deps)
        assert (await admin_db.fetchrow(query, uuid.UUID(ep["id"])))["previous_secret_ciphertext"] is not None  # within the overlap
        clock.advance(seconds=61)
        await rewrap_secrets(svc.deps)
        assert dict(await admin_db.fetchrow(query, uuid.UUID(ep["id"]))) == {
            "previous_secret_kek_id": None,
            "previous_secret_ciphertext": None,
        }


async def test_migration_002_discards_clear_text_secrets_and_the_endpoint_asks_for_a_new_one(
    start_service, peer, admin_db, unique, database_url, topic_namespace
):
    # A database as the previous release left it: migration 001 applied, a secret in clear text.
    schema = f"notif_{unique}"
    first = [m for m in load_migrations("notifications", MIGRATIONS) if m.version == "notifications:001_notifications"]
    password = fast_settings(topic_namespace).db_role_password.get_secret_value()
    await provision(
        database_url, schema=schema, role=f"lotse_{schema}", password=password, migrations=load_migrations("kit", KIT_MIGRATIONS) + first
    )
    clear, clear_previous = (f"whsec_{base64.b64encode(os.urandom(32)).decode()}" for _ in range(2))
    legacy = uuid.uuid4()
    await admin_db.execute(
        f"""INSERT INTO {schema}.webhook_endpoints (id, org_id, url, secret, previous_secret, previous_secret_expires_at)
            VALUES ($1, $2, $3, $4, $5, now() + interval '1 day')""",
        legacy,
        CARITAS,
        peer.url("/hooks/legacy"),
        clear,
        clear_previous,
    )

    async with start_service() as svc:  # applies 002
        row = await admin_db.fetchrow(
            f"SELECT row_to_json(w)::text AS as_json, w.* FROM {schema}.webhook_endpoints w WHERE id = $1", legacy
        )
        assert clear.removeprefix("whsec_") not in row["as_json"] and clear_previous.removeprefix("whsec_") not in row["as_json"]
        assert row["secret_kek_id"] is None and row["previous_secret_kek_id"] is None and row["status"] == "disabled"
        shown = (await svc.http.get(f"/v1/webhook-endpoints/{legacy}", headers=AS_CARITAS)).json()
        assert shown["status"] == "disabled" and "rotate the secret" in shown["disabled_reason"]

        # Nothing is sent for it meanwhile.
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 1), timeout=60)  # the e-mail only

        refused = await svc.http.post(f"/v1/webhook-endpoints/{legacy}/enable", headers=AS_CARITAS)
        assert refused.status_code == 409 and "rotate the secret first" in refused.json()["detail"]
        rotated = await svc.http.post(f"/v1/webhook-endpoints/{legacy}/rotate-secret", headers=AS_CARITAS)
        assert rotated.status_code == 200 and rotated.json()["previous_secret_expires_at"] is None
        secret = rotated.json()["secret"]
        assert (await svc.http.post(f"/v1/webhook-endpoints/{legacy}/enable", headers=AS_CARITAS)).json()["status"] == "active"

        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        [req] = peer.at("/hooks/legacy")
        assert [v for v, _ in signatures(req.headers)] == ["v1", "v1a"]  # the discarded secrets sign nothing
        assert Webhook(secret).verify(req.body, req.headers)


# ---------------------------------------------------------------- v1a
async def test_webhooks_carry_v1_and_v1a_signatures_that_verify_independently(start_service, peer):
    async with start_service() as svc:
        published = await svc.http.get("/v1/webhooks/public-key")  # no organisation, no credentials: the key is public
        assert published.status_code == 200, published.text
        body = published.json()
        assert body["algorithm"] == "ed25519" and body["signature_version"] == "v1a"
        assert body["keys"] == [{"key_id": body["keys"][0]["key_id"], "public_key": body["public_key"], "status": "current"}]
        key = public_key(body["public_key"])

        ep = await register(svc, CARITAS, "/hooks/signed", peer)
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: len(peer.at("/hooks/signed")) == 1, timeout=60)
        [req] = peer.at("/hooks/signed")

        # v1 with the standardwebhooks package, v1a with cryptography's Ed25519: neither uses the service's code.
        payload = Webhook(ep["secret"]).verify(req.body, req.headers)
        assert payload["data"]["organisation"] == CARITAS  # the recipient is part of what is signed
        [v1a] = [sig for version, sig in signatures(req.headers) if version == "v1a"]
        key.verify(base64.b64decode(v1a), signed_content(req))
        with pytest.raises(InvalidSignature):
            key.verify(base64.b64decode(v1a), signed_content(req).replace(CARITAS.encode(), b"awo-paderborn"))

    # Rotating the signing key: the previous key still signs and is still published until it is removed.
    new = Ed25519PrivateKey.generate()
    async with start_service(webhook_signing_key=signing_key_text(new), webhook_signing_previous_key=TEST_SIGNING_KEY) as svc:
        keys = (await svc.http.get("/v1/webhooks/public-key")).json()["keys"]
        assert [k["status"] for k in keys] == ["current", "previous"] and keys[1]["public_key"] == body["public_key"]
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: len(peer.at("/hooks/signed")) == 2, timeout=60)
        req = peer.at("/hooks/signed")[-1]
        current, previous = [base64.b64decode(sig) for version, sig in signatures(req.headers) if version == "v1a"]
        new.public_key().verify(current, signed_content(req))
        public_key(keys[0]["public_key"]).verify(current, signed_content(req))
        key.verify(previous, signed_content(req))


# ---------------------------------------------------------------- where webhooks may go (SSRF)
async def test_registration_refuses_what_is_not_public_literally_and_by_what_it_resolves_to(start_service):
    dns = FakeDns(mixed_partner_test=[PUBLIC_IP, "10.0.0.1"], metadata_partner_test=["169.254.169.254"])
    async with start_service(webhook_allowed_hosts=[], resolver=dns) as svc:
        cases = [
            ("http://127.0.0.1:8080/hooks", "127.0.0.1 is not a public address (loopback)"),
            ("https://10.1.2.3/hooks", "10.1.2.3 is not a public address (private (RFC 1918))"),
            ("https://172.20.0.1/hooks", "private (RFC 1918)"),
            ("https://192.168.1.10/hooks", "private (RFC 1918)"),
            ("https://100.64.0.1/hooks", "shared address space (CGNAT, RFC 6598)"),
            ("https://169.254.169.254/latest/meta-data/", "link-local"),
            ("https://[fe80::1]/hooks", "link-local"),
            ("https://[fd00::1]/hooks", "unique local (ULA, private)"),
            ("https://[::1]/hooks", "loopback"),
            ("https://[::ffff:127.0.0.1]/hooks", "loopback, embedded in"),
            ("https://0.0.0.0/hooks", "unspecified"),
            ("https://224.0.0.1/hooks", "multicast"),
            ("https://240.0.0.1/hooks", "reserved"),
            ("https://metadata.partner.test/hooks", "metadata.partner.test resolves to 169.254.169.254, not a public address (link-local)"),
            ("https://mixed.partner.test/hooks", "mixed.partner.test resolves to 10.0.0.1, not a public address (private (RFC 1918))"),
        ]
        for url, words in cases:
            resp = await svc.http.post("/v1/webhook-endpoints", json={"url": url}, headers=AS_CARITAS)
            assert_refused(resp, "url", words)
            assert resp.json()["type"] == "urn:lotse:problem:invalid-endpoint-url"
        assert (await svc.http.get("/v1/webhook-endpoints", headers=AS_CARITAS)).json() == []
        assert {"metadata.partner.test", "mixed.partner.test"} <= set(dns.asked)


async def test_localhost_is_refused_by_what_the_system_resolver_answers(start_service):
    async with start_service(webhook_allowed_hosts=[]) as svc:
        resp = await svc.http.post("/v1/webhook-endpoints", json={"url": "http://localhost:8080/hooks"}, headers=AS_CARITAS)
        assert_refused(resp, "url", "localhost resolves to")
        assert "loopback" in resp.json()["detail"]


async def test_a_name_that_turns_private_after_registration_is_a_permanent_failure_at_delivery(start_service, peer):
    dns = FakeDns(hooks_partner_test=[PUBLIC_IP])
    port = urlsplit(peer.base_url).port
    async with start_service(webhook_allowed_hosts=[], resolver=dns) as svc:
        ep = await register_url(svc, f"http://hooks.partner.test:{port}/rebound")
        dns.answers["hooks.partner.test"] = ["127.0.0.1"]  # DNS rebinding: now the service's own host
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        row = (await webhook_rows(svc, env.id))[ep["id"]]
        assert row["status"] == "permanent-failure" and row["attempts"] == 1
        assert row["reason"] == "destination refused: hooks.partner.test resolves to 127.0.0.1, not a public address (loopback)"
        assert peer.requests == []  # nothing reached the loopback peer


async def test_the_webhook_connects_to_the_address_that_was_checked(start_service, peer):
    # hooks.partner.test exists only in this resolver: the request arrives only if the connection goes to the
    # address the guard checked, not to a name the operating system resolves again.
    dns = FakeDns(hooks_partner_test=["127.0.0.1"])
    port = urlsplit(peer.base_url).port
    async with start_service(resolver=dns) as svc:  # 127.0.0.1 allow-listed (fast_settings)
        ep = await register_url(svc, f"http://hooks.partner.test:{port}/checked")
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        assert (await webhook_rows(svc, env.id))[ep["id"]]["status"] == "delivered"
        [req] = peer.at("/checked")
        assert req.headers["host"] == f"hooks.partner.test:{port}"
        assert dns.asked.count("hooks.partner.test") >= 2  # at registration and at delivery


# ---------------------------------------------------------------- TLS
async def test_a_certificate_that_does_not_verify_is_a_permanent_failure_with_its_reason(start_service, tmp_path):
    ca, ca_key, ca_cert = make_ca(tmp_path)
    trusted = make_server_cert(tmp_path, "trusted", ca=(ca_key, ca_cert), ips=("127.0.0.1",))
    self_signed = make_server_cert(tmp_path, "self-signed", ca=None, ips=("127.0.0.1",))
    async with (
        https_peer(trusted) as good,
        https_peer(self_signed) as bad,
        start_service(webhook_allow_http=False, webhook_ca_file=ca.cert) as svc,  # https only; 127.0.0.1 allow-listed
    ):
        ok = await register(svc, CARITAS, "/hooks/trusted", good)
        untrusted = await register(svc, CARITAS, "/hooks/self-signed", bad)
        # The trusted certificate names 127.0.0.1 only; localhost resolves to 127.0.0.1, which is allow-listed.
        mismatch = await register_url(svc, good.url("/hooks/mismatch").replace("127.0.0.1", "localhost"))
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 4), timeout=60)
        rows = await webhook_rows(svc, env.id)

        assert rows[ok["id"]]["status"] == "delivered" and len(good.at("/hooks/trusted")) == 1  # TLS itself works
        for ep, words in [(untrusted, "self-signed certificate"), (mismatch, "Hostname mismatch")]:
            row = rows[ep["id"]]
            assert row["status"] == "permanent-failure" and row["attempts"] == 1, dict(row)
            assert row["reason"].startswith("TLS certificate verification failed: ") and words in row["reason"].replace(
                "self signed", "self-signed"
            )
            attempts = await svc.pool.fetch("SELECT outcome, reason FROM delivery_attempts WHERE notification_id = $1", row["id"])
            assert [a["outcome"] for a in attempts] == ["permanent"]
        assert bad.requests == [] and good.at("/hooks/mismatch") == []


# ---------------------------------------------------------------- helpers
async def register_url(svc: Any, url: str) -> dict[str, Any]:
    r = await svc.http.post("/v1/webhook-endpoints", json={"url": url}, headers=AS_CARITAS)
    assert r.status_code == 201, r.text
    return json.loads(r.text)


async def _final_webhooks(svc: Any, trigger_id: uuid.UUID) -> bool:
    rows = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", trigger_id)
    return bool(rows) and all(r["status"] not in ("created", "sending") for r in rows)


async def _eq(coro: Any, expected: Any) -> bool:
    return (await coro) == expected
