"""Personal data from consent to erasure, across the whole running network (tests/e2e/network.py).

A client's data is disclosed to Caritas sealed to Caritas's key; a correction reaches exactly the
organisation that received the corrected category; a withdrawal and an erasure reach Caritas, which
acknowledges both with its signature; and after the erasure nothing readable about the client is left
in any table of any service, in any outbox, on any `lotse.*` topic or in the logs, while the inbox
holds only ciphertext and the audit log still verifies.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from typer.testing import CliRunner

from contracts import Envelope, decode, encode, topics
from contracts.events import ClientErased, ConsentWithdrawn, PartnerCorrection, PartnerReferralV2
from lotse_partner import acknowledge, open_sealed
from services.audit.cli import app as audit_cli
from tests.auth.conftest import Keycloak
from tests.e2e.network import CARITAS, JOBCENTER, Partner, RunningNetwork, running_network
from tests.kafka_helpers import eventually, produce_raw, read_topic
from tests.peers import MailSink

SECRETS = ("Koval", "olena.koval@example.org", "olena.new@example.org", "+49 5251 123456", "1988-04-12", "ground-floor")


async def inbox(net: RunningNetwork, partner: Partner, *, until: Any, timeout: float = 60) -> list[Envelope[Any]]:
    """The partner's inbox, read as the partner (its principal, a group under its prefix), decoded."""
    records = await read_topic(
        partner.kafka,
        net.topic(topics.partner_inbox(partner.org)),
        until=lambda rs: until([decode(r.headers, r.value) for r in rs]),
        timeout=timeout,
        group=f"{net.ns}partner.{partner.org}.test-{uuid.uuid4().hex[:6]}",
    )
    return [decode(r.headers, r.value) for r in records]


async def publish_as(partner: Partner, net: RunningNetwork, env: Envelope[Any]) -> None:
    rec = encode(env)
    await produce_raw(partner.kafka, net.topic(topics.partner_outbox(partner.org)), [(rec.key, rec.value, rec.headers)])


async def test_correction_withdrawal_and_erasure_reach_the_recipient_and_leave_nothing_readable(
    kafka_bootstrap: str,
    keycloak: Keycloak,
    unique: str,
    topic_namespace: str,
    smtp: MailSink,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_network(keycloak, kafka_bootstrap, unique, topic_namespace, smtp, tmp_path) as net:
        jc = net.callers["jobcenter"]
        r = await net.intake.post(
            "/v1/clients",
            headers=jc,
            json={
                "registering_org": JOBCENTER,
                "given_name": "Olena",
                "family_name": "Koval",
                "date_of_birth": "1988-04-12",
                "email": "olena.koval@example.org",
                "phone": "+49 5251 123456",
                "preferred_language": "uk",
                "languages": ["uk"],
                "needs": ["integration_course"],
                "health": "needs ground-floor rooms",
            },
        )
        assert r.status_code == 201, r.text
        client_id = r.json()["client_id"]
        consent_id = (await net.consent_to_referral(jc, client_id, CARITAS, "uk"))["consent_id"]
        r = await net.intake.post(
            f"/v1/clients/{client_id}/referrals", headers=jc, json={"need": "integration_course", "categories": ["identity", "contact"]}
        )
        assert r.status_code == 201, r.text
        got = await inbox(net, net.caritas, until=lambda es: any(isinstance(e.data, PartnerReferralV2) for e in es))
        referral = next(e for e in got if isinstance(e.data, PartnerReferralV2))
        assert open_sealed(referral, net.caritas.keys).personal_data.contact.email == "olena.koval@example.org"

        # 1. A correction of the contact data reaches Caritas, which received contact; a correction of health,
        #    which Caritas never received, reaches nobody; AWO received nothing and gets nothing.
        r = await net.intake.patch(f"/v1/clients/{client_id}", headers=jc, json={"email": "olena.new@example.org"})
        assert r.status_code == 200, r.text
        r = await net.intake.patch(f"/v1/clients/{client_id}", headers=jc, json={"health": "no stairs"})
        assert r.status_code == 200, r.text
        got = await inbox(net, net.caritas, until=lambda es: any(isinstance(e.data, PartnerCorrection) for e in es))
        [correction] = [e for e in got if isinstance(e.data, PartnerCorrection)]
        assert correction.data.categories == ["contact"] and b"olena.new" not in encode(correction).value
        corrected = open_sealed(correction, net.caritas.keys)
        assert corrected.personal_data.contact.email == "olena.new@example.org" and corrected.personal_data.health is None
        await asyncio.sleep(2)  # the health correction has had time to go wherever it would go
        got = await inbox(net, net.caritas, until=lambda es: False, timeout=3)
        assert sum(isinstance(e.data, PartnerCorrection) for e in got) == 1
        assert await inbox(net, net.awo, until=lambda es: False, timeout=2) == []

        # 2. The client withdraws: Caritas is told and acknowledges, signed.
        r = await net.consent.post(f"/v1/consents/{consent_id}/withdraw", headers=jc)
        assert r.status_code == 200, r.text
        got = await inbox(net, net.caritas, until=lambda es: any(isinstance(e.data, ConsentWithdrawn) for e in es))
        withdrawn = next(e for e in got if isinstance(e.data, ConsentWithdrawn))
        await publish_as(net.caritas, net, acknowledge(withdrawn, net.caritas.keys))

        # 3. The client's data is erased at intake: Caritas is told and acknowledges, signed.
        r = await net.intake.delete(f"/v1/clients/{client_id}", headers=jc)
        assert r.status_code in (200, 202), r.text
        assert (await net.intake.get(f"/v1/clients/{client_id}", headers=jc)).status_code == 410
        got = await inbox(net, net.caritas, until=lambda es: any(isinstance(e.data, ClientErased) for e in es))
        erased = next(e for e in got if isinstance(e.data, ClientErased))
        await publish_as(net.caritas, net, acknowledge(erased, net.caritas.keys))

        async def both_acknowledged() -> list[dict[str, Any]] | None:
            r = await net.consent.get(f"/v1/clients/{client_id}/disclosures", headers=jc)
            assert r.status_code == 200, r.text
            acks = r.json()["acknowledgements"]
            done = {(a["kind"], a["org"]) for a in acks if a["status"] == "acknowledged"}
            return acks if {("withdrawal", CARITAS), ("erasure", CARITAS)} <= done else None

        acks = await eventually(both_acknowledged, timeout=60)
        assert {a["event_id"] for a in acks} >= {str(withdrawn.id), str(erased.id)}

        # 4. Nothing readable about the client is left: no table of any service, no outbox ...
        leftovers = await readable_leftovers(net, SECRETS)
        assert leftovers == [], leftovers
        # ... no shared topic ...
        for logical in (*topics.INTERNAL_TOPICS, topics.DISCLOSURE_REQUESTS):
            for rec in await read_topic(net.kafka, net.topic(logical), until=lambda rs: False, timeout=2):
                blob = rec.value + b"".join(v for _, v in rec.headers or ())
                assert not any(s.encode() in blob for s in SECRETS), (logical, rec.offset)
        # ... and the partner's inbox only ciphertext, which means nothing once Caritas erased its key material
        for rec in await read_topic(net.kafka, net.topic(topics.partner_inbox(CARITAS)), until=lambda rs: False, timeout=2):
            assert not any(s.encode() in rec.value for s in SECRETS)
        # ... nor any log line of this test's run.
        assert not any(s in caplog.text for s in SECRETS)

        # 5. The audit log holds both acknowledgements and still verifies end to end.
        async def acks_logged() -> bool:
            r = await net.audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 500}, headers=net.callers["auditor"])
            types = {e["entry"]["ce"].get("type") for e in r.json()["items"]}
            return {"lotse.withdrawal.acknowledged", "lotse.erasure.acknowledged", "lotse.client.erased"} <= types

        await eventually(acks_logged, timeout=60)
        head = await net.audit.post("/v1/audit/tree-head", headers=net.callers["operator"])
        assert head.status_code == 201, head.text
        key = load_pem_private_key((tmp_path / "key.pem").read_bytes(), password=None)
        raw = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        token = net.callers["auditor"]["Authorization"].removeprefix("Bearer ")
        url = str(net.audit.base_url)
        result = await asyncio.to_thread(CliRunner().invoke, audit_cli, ["verify", "--url", url, "--public-key", raw, "--token", token])
        assert result.exit_code == 0 and result.stdout.startswith("OK:"), result.output


async def readable_leftovers(net: RunningNetwork, secrets: tuple[str, ...]) -> list[str]:
    """Every column of every table in the services' schemas, as text, searched for the client's data."""
    import os

    conn = await asyncpg.connect(os.environ["LOTSE_DATABASE_URL"])
    found: list[str] = []
    try:
        for schema in net.schemas.values():
            tables = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
            for t in tables:
                rows = await conn.fetch(f'SELECT t::text AS row FROM "{schema}"."{t["table_name"]}" t')
                for row in rows:
                    # In clear, or as the hex of a bytea column holding the bytes in clear.
                    hits = [s for s in secrets if s in row["row"] or s.encode().hex() in row["row"]]
                    if hits:
                        found.append(f"{schema}.{t['table_name']}: {hits}")
    finally:
        await conn.close()
    return found
