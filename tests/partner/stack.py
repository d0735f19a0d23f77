"""The running local network (`make up`) as the partner examples' tests use it: the four services on their
default ports, Keycloak's demo users, the partners' Kafka credentials and keys under `.run/`.

A test plays the referring organisation's caseworker through intake's and consent's public APIs (a client,
her consent, a referral) and runs an example's partner system with the partner's own credentials and
keys, then reads what intake recorded. Nothing is faked; the tests skip when the stack is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lotse_cli.dev import find_user, run_dir, user_token
from lotse_kit.settings import KitSettings, service_url
from lotse_partner import Handler, InboxRecord, KafkaTransport, Outbox, PartnerInbox, PartnerKeys, Transport, kafka_options

# The local stack's Keycloak realm, as the running services trust it (the test session's own LOTSE_OIDC_* point at
# a local test issuer, tests/fixtures.py, which these services do not know).
KEYCLOAK_ISSUER = f"http://127.0.0.1:{os.environ.get('LOTSE_KEYCLOAK_PORT', '8180')}/realms/lotse"
INFO = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}


def require_stack() -> None:
    """Skips unless `make up` is running (intake and consent ready, partner credentials provisioned)."""
    for svc in ("intake", "consent"):
        try:
            r = httpx.get(service_url(svc) + "/health/ready", timeout=3)
        except httpx.HTTPError:
            pytest.skip(f"the local network is not running ({svc} does not answer): `make up` first")
        if r.status_code != 200:
            pytest.skip(f"{svc} is not ready: `make up` first")
    if not (run_dir() / "kafka" / "credentials").is_dir():
        pytest.skip("no partner credentials under .run/kafka/credentials: `make up` first")


def gateway_url() -> str | None:
    """The gateway's URL when it runs on the local stack, else None."""
    url = service_url("gateway")
    try:
        ok = httpx.get(url + "/health/ready", timeout=3).status_code == 200
    except httpx.HTTPError:
        ok = False
    return url if ok else None


def token_now(org: str | None, role: str) -> str:
    return user_token(find_user(org, role), issuer=KEYCLOAK_ISSUER)


async def token(org: str | None, role: str) -> str:
    return await asyncio.to_thread(token_now, org, role)


async def bearer(org: str | None, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await token(org, role)}"}


def partner_keys_file(org: str) -> Path:
    """Where `lotse demo seed` keeps an organisation's private keys on the local stack."""
    return run_dir() / "partners" / org / "keys.json"


def kafka_credentials(org: str) -> Path:
    return run_dir() / "kafka" / "credentials" / f"partner-{org}.properties"


def partner_kafka(org: str) -> dict[str, Any]:
    """The partner's connection as the kit reads its credentials file (`kafka_options`)."""
    s = KitSettings()
    bootstrap = s.kafka_bootstrap if "kafka_bootstrap" in s.model_fields_set else None
    return kafka_options(kafka_credentials(org), bootstrap=bootstrap)


async def partner_keys(org: str) -> PartnerKeys:
    """The organisation's keys as `lotse demo seed` keeps them (the same file, so the demo still opens what is
    sealed to the key registered last), registered with the consent service by its partner system."""
    keys = PartnerKeys.load_or_create(partner_keys_file(org), org)
    headers = await bearer(org, "partner_system")
    async with httpx.AsyncClient(base_url=service_url("consent"), timeout=30) as http:
        for use in ("enc", "sig"):
            r = await http.post(f"/v1/organisations/{org}/keys", headers=headers, json=keys.public(use).model_dump())
            assert r.status_code in (200, 201), r.text
    return keys


@dataclass
class Referral:
    client_id: str
    referral_id: str
    to_org: str


@dataclass
class Caseworker:
    """A referring organisation's caseworker on intake and consent (token from the local Keycloak)."""

    org: str
    headers: dict[str, str] = field(default_factory=dict)

    async def __aenter__(self) -> Caseworker:
        self.headers = await bearer(self.org, "caseworker")
        self._intake = httpx.AsyncClient(base_url=service_url("intake"), timeout=30)
        self._consent = httpx.AsyncClient(base_url=service_url("consent"), timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._intake.aclose()
        await self._consent.aclose()

    async def refer(
        self,
        *,
        need: str,
        recipients: Iterable[str],
        categories: list[str],
        client: dict[str, Any],
        reason: str | None = None,
    ) -> Referral:
        """Registers a client, records her consent for `recipients` and `categories`, and refers her for `need`."""
        r = await self._intake.post("/v1/clients", headers=self.headers, json={"registering_org": self.org, **client})
        assert r.status_code == 201, r.text
        client_id = r.json()["client_id"]
        r = await self._consent.post(
            "/v1/consents",
            headers=self.headers,
            json={
                "client_id": client_id,
                "recipients": [*recipients, self.org],
                "purposes": ["referral", "contact_for_notifications"],
                "categories": categories,
                "form": "written",
                "information_language": client.get("preferred_language", "de"),
                "information": INFO,
            },
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = {"need": need, "categories": categories}
        if reason:
            body["reason"] = reason
        r = await self._intake.post(f"/v1/clients/{client_id}/referrals", headers=self.headers, json=body)
        assert r.status_code == 201, r.text
        return Referral(client_id, r.json()["referral_id"], r.json()["to_org"])

    async def referral(self, referral_id: str) -> dict[str, Any]:
        r = await self._intake.get(f"/v1/referrals/{referral_id}", headers=self.headers)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc

    async def withdraw_consents(self, client_id: str) -> None:
        r = await self._consent.get(f"/v1/clients/{client_id}/consents", headers=self.headers)
        assert r.status_code == 200, r.text
        for consent in r.json():
            w = await self._consent.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=self.headers)
            assert w.status_code == 200, w.text

    async def erase(self, client_id: str) -> None:
        r = await self._intake.delete(f"/v1/clients/{client_id}", headers=self.headers)
        assert r.status_code in (200, 202), r.text

    async def acknowledgements_when(
        self, client_id: str, org: str, want: set[tuple[str, str]], timeout: float = 60
    ) -> set[tuple[str, str]]:
        """(kind, status) of `org`'s acknowledgements for the client as consent records them, once `want` is among them."""
        end = time.monotonic() + timeout
        while True:
            r = await self._consent.get(f"/v1/clients/{client_id}/disclosures", headers=self.headers)
            assert r.status_code == 200, r.text
            acks = {(a["kind"], a["status"]) for a in r.json()["acknowledgements"] if a["org"] == org}
            if want <= acks or time.monotonic() > end:
                return acks
            await asyncio.sleep(0.3)

    async def referral_when(self, referral_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        """The referral as intake records it, once it has `status` (polls; fails after `timeout`)."""
        end = time.monotonic() + timeout
        while True:
            doc = await self.referral(referral_id)
            if doc["status"] == status or time.monotonic() > end:
                assert doc["status"] == status, doc
                return doc
            await asyncio.sleep(0.3)


def only_clients(handler: Handler, clients: Callable[[], set[str]]) -> Handler:
    """`handler` for the test's own clients only: others' records on the shared stack are skipped (committed
    in the test's throw-away group), so a test answers no referral another engineer's run is waiting for."""

    async def filtered(record: InboxRecord, outbox: Outbox) -> None:
        if record.event.client_id in clients():
            await handler(record, outbox)

    return filtered


def kafka_transport(org: str) -> KafkaTransport:
    """The partner's inbox over Kafka in a consumer group of the test's own, from the current end."""
    return KafkaTransport(
        partner_kafka(org), org, group=f"example-test-{uuid.uuid4().hex[:8]}", start="latest", namespace=KitSettings().topic_namespace
    )


@contextlib.asynccontextmanager
async def running(inbox: PartnerInbox) -> AsyncIterator[PartnerInbox]:
    """The partner's consumer running in the background, ready (partitions assigned) when entered."""
    stop = asyncio.Event()
    task = asyncio.create_task(inbox.run(stop))
    ready = asyncio.create_task(inbox.ready.wait())
    await asyncio.wait({task, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    assert inbox.ready.is_set(), "the partner's consumer did not start"
    try:
        yield inbox
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def transport_for(kind: str, org: str) -> Transport:
    if kind == "kafka":
        return kafka_transport(org)
    url = gateway_url()
    if url is None:
        pytest.skip("the gateway is not running on the local stack")
    from lotse_partner.https import HttpsTransport

    return HttpsTransport(url, org, lambda: token(org, "partner_system"), long_poll_s=1)
