"""`lotse demo seed`: fills a freshly started local network with a few realistic cases.

It talks to the running services over their public HTTP APIs only, as caseworkers would, and plays
Caritas's partner system with Caritas's own Kafka credentials and keys (the partner kit): it registers
Caritas's public keys, opens the sealed referral on its inbox, and acknowledges, signed, the client's
withdrawal and then the erasure of her data. All names are invented; e-mail addresses use the reserved
.example domain and land in the local mail sink (.run/mail) that `make up` starts.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from contracts import Envelope, decode, encode, topics
from contracts.events import ClientErased, ConsentWithdrawn, PartnerReferralV2
from lotse_cli.dev import find_user, run_dir, user_token
from lotse_kit.kafka import KafkaConnection
from lotse_kit.settings import KitSettings, service_url
from lotse_partner import PartnerKeys, acknowledge, open_sealed

app = typer.Typer(help="Demo data for the local network.", no_args_is_help=True)
console = Console()

INFO = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}

CASES: list[dict[str, Any]] = [
    {
        "org": "jobcenter-kreis-paderborn",
        "client": {
            "given_name": "Olena",
            "family_name": "Demo-Koval",
            "date_of_birth": "1988-04-12",
            "email": "olena@clients.example",
            "preferred_language": "uk",
            "languages": ["uk", "ru"],
            "needs": ["integration_course"],
            "residence_title": "aufenthg_24",
            "residence_valid_until": (date.today() + timedelta(days=80)).isoformat(),
        },
        "consent": {
            "recipients": ["caritas-paderborn", "jobcenter-kreis-paderborn"],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact"],
            "information_language": "uk",
        },
        "referral": {"need": "integration_course", "categories": ["identity", "contact"], "reason": "Integrationskurs mit Kinderbetreuung"},
    },
    {
        "org": "kim-kreis-paderborn",
        "client": {
            "given_name": "Samir",
            "family_name": "Demo-Haddad",
            "date_of_birth": "2001-09-30",
            "email": "samir@clients.example",
            "preferred_language": "ar",
            "languages": ["ar", "de"],
            "needs": ["recognition_of_qualifications"],
            "residence_title": "aufenthg_104c",
            "residence_valid_from": (date.today() - timedelta(days=400)).isoformat(),
        },
        "consent": {
            "recipients": ["ki-kreis-paderborn", "kim-kreis-paderborn"],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact", "education_qualifications"],
            "information_language": "ar",
        },
        "referral": {
            "need": "recognition_of_qualifications",
            "categories": ["identity", "contact"],
            "reason": "Anerkennung Ausbildung Elektriker",
        },
    },
    {
        "org": "caritas-paderborn",
        "client": {
            "given_name": "Parisa",
            "family_name": "Demo-Rahimi",
            "date_of_birth": "1995-01-20",
            "email": "parisa@clients.example",
            "preferred_language": "fa",
            "languages": ["fa", "en"],
            "needs": ["psychosocial_support"],
            "residence_title": "aufenthaltsgestattung",
            "residence_valid_until": (date.today() + timedelta(days=25)).isoformat(),
        },
        "consent": None,  # no consent yet: the referral is refused with 409
        "referral": {"need": "psychosocial_support", "categories": ["identity", "contact"]},
    },
]


# Partner systems the demo plays: they register their public keys before anything is sealed to them.
PARTNERS = ("caritas-paderborn", "ki-kreis-paderborn")


@app.command("seed")
def seed(
    intake: str = service_url("intake"),
    consent: str = service_url("consent"),
) -> None:
    """Register three clients, record consents and send referrals; then Caritas opens its referral and
    acknowledges the client's withdrawal and erasure."""
    clients: list[str] = []
    with httpx.Client(timeout=30) as http:
        for org in PARTNERS:
            keys = partner_keys(org)
            h = {"Authorization": f"Bearer {user_token(find_user(org, 'partner_system'))}"}
            for use in ("enc", "sig"):
                r = http.post(f"{consent}/v1/organisations/{org}/keys", headers=h, json=keys.public(use).model_dump())
                _check(r, (200, 201), f"register {org}'s {use} key")  # 200: registered on an earlier run
            console.print(f"[bold]{org}[/bold] registered its public keys (private keys: {partner_keys_file(org)})")
        for case in CASES:
            org = case["org"]
            # Each organisation acts with its caseworker's token from the local Keycloak.
            h = {"Authorization": f"Bearer {user_token(find_user(org, 'caseworker'))}"}
            r = http.post(f"{intake}/v1/clients", headers=h, json={"registering_org": org, **case["client"]})
            _check(r, 201, "register client")
            client_id = r.json()["client_id"]
            if case["consent"]:
                r = http.post(
                    f"{consent}/v1/consents",
                    headers=h,
                    json={"client_id": client_id, "form": "written", "information": INFO, **case["consent"]},
                )
                _check(r, 201, "record consent")
            r = http.post(f"{intake}/v1/clients/{client_id}/referrals", headers=h, json=case["referral"])
            if r.status_code == 201:
                outcome = f"referral sent to {r.json()['to_org']}"
            elif r.status_code == 409:
                outcome = f"referral refused: {r.json().get('detail', r.json().get('title'))}"
            else:
                _check(r, 201, "send referral")
            console.print(f"[bold]{org}[/bold] registered client {client_id} ({case['client']['preferred_language']}): {outcome}")
            clients.append(client_id)
        privacy_story(http, intake, consent, clients[0])
    console.print("Partner inboxes: `lotse topics list`; mail: .run/mail/new; audit: " + service_url("audit") + "/v1/audit/entries")


def partner_keys_file(org: str) -> Path:
    return run_dir() / "partners" / org / "keys.json"


def partner_keys(org: str) -> PartnerKeys:
    return PartnerKeys.load_or_create(partner_keys_file(org), org)


def privacy_story(http: httpx.Client, intake: str, consent: str, client_id: str) -> None:
    """Caritas opens the referral sealed to it; the client withdraws and has her data erased; Caritas is told
    of both on its inbox and acknowledges each with its signature; the consent service shows them acknowledged."""
    org, caritas = "jobcenter-kreis-paderborn", "caritas-paderborn"
    jc = {"Authorization": f"Bearer {user_token(find_user(org, 'caseworker'))}"}
    keys = partner_keys(caritas)
    kafka = partner_kafka(caritas)

    referral = asyncio.run(next_on_inbox(kafka, caritas, client_id, PartnerReferralV2))
    opened = open_sealed(referral, keys)
    assert opened is not None
    who = opened.personal_data.identity
    console.print(
        f"[bold]{caritas}[/bold] opened the referral sealed to its key {referral.data.sealed.kid}: "
        f"{who.given_name if who else '?'} {who.family_name if who else '?'}, categories {', '.join(referral.data.categories)}"
    )

    consents = http.get(f"{consent}/v1/clients/{client_id}/consents", headers=jc)
    _check(consents, 200, "list consents")
    consent_id = consents.json()[0]["consent_id"]
    _check(http.post(f"{consent}/v1/consents/{consent_id}/withdraw", headers=jc), 200, "withdraw consent")
    console.print(f"[bold]{org}[/bold] recorded the client's withdrawal of consent {consent_id}")
    withdrawn = asyncio.run(next_on_inbox(kafka, caritas, client_id, ConsentWithdrawn))
    asyncio.run(publish_ack(kafka, caritas, acknowledge(withdrawn, keys)))
    console.print(f"[bold]{caritas}[/bold] was told on its inbox and acknowledged the withdrawal (signed)")

    r = http.delete(f"{intake}/v1/clients/{client_id}", headers=jc)
    _check(r, (200, 202), "erase client")
    console.print(f"[bold]{org}[/bold] erased the client's personal data (her data key is destroyed)")
    erased = asyncio.run(next_on_inbox(kafka, caritas, client_id, ClientErased))
    asyncio.run(publish_ack(kafka, caritas, acknowledge(erased, keys)))
    console.print(f"[bold]{caritas}[/bold] was told on its inbox and acknowledged the erasure (signed)")

    deadline = time.monotonic() + 60
    while True:
        r = http.get(f"{consent}/v1/clients/{client_id}/disclosures", headers=jc)
        _check(r, 200, "list disclosures")
        acks = {(a["kind"], a["status"]) for a in r.json()["acknowledgements"] if a["org"] == caritas}
        if {("withdrawal", "acknowledged"), ("erasure", "acknowledged")} <= acks or time.monotonic() > deadline:
            break
        time.sleep(1)
    console.print(f"consent service: {caritas}'s acknowledgements: {', '.join(f'{k} {s}' for k, s in sorted(acks))}")


def partner_kafka(org: str) -> KafkaConnection:
    """The partner's own Kafka credentials (written by `lotse admin provision`), on the local stack."""
    path = Path(os.environ.get("LOTSE_DEMO_PARTNER_CREDENTIALS_DIR", run_dir() / "kafka" / "credentials")) / f"partner-{org}.properties"
    s = KitSettings()
    conn = KafkaConnection.from_properties(path)
    return conn if "kafka_bootstrap" not in s.model_fields_set else KafkaConnection.from_properties(path, bootstrap=s.kafka_bootstrap)


async def next_on_inbox(kafka: KafkaConnection, org: str, client_id: str, kind: type, timeout: float = 60) -> Envelope[Any]:
    """The first record of `kind` about the client on the partner's inbox, read as the partner."""
    ns = KitSettings().topic_namespace
    consumer = AIOKafkaConsumer(
        ns + topics.partner_inbox(org),
        group_id=f"{ns}partner.{org}.demo-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka.aiokafka(),
    )
    try:
        await consumer.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    env = decode(rec.headers, rec.value)
                    if isinstance(env.data, kind) and str(getattr(env.data, "client_id", "")) == client_id:
                        return env
    finally:
        await consumer.stop()
    console.print(f"[red]no {kind.__name__} for client {client_id} on {org}'s inbox within {timeout:.0f} s[/red]")
    raise typer.Exit(1)


async def publish_ack(kafka: KafkaConnection, org: str, env: Envelope[Any]) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kafka.aiokafka())
    await producer.start()
    try:
        rec = encode(env)
        await producer.send_and_wait(
            KitSettings().topic_namespace + topics.partner_outbox(org), value=rec.value, key=rec.key, headers=rec.headers
        )
    finally:
        await producer.stop()


def _check(r: httpx.Response, status: int | tuple[int, ...], what: str) -> None:
    if r.status_code not in (status if isinstance(status, tuple) else (status,)):
        console.print(f"[red]{what} failed: HTTP {r.status_code} {r.text}[/red]")
        raise typer.Exit(1)
