"""`lotse demo`: the story of the source articles on the running network, narrated; `lotse demo seed`: demo data.

    lotse demo                # plays the story, step by step, for people (rich); exit 1 if it did not play out
    lotse demo --json         # the same, one JSON document on stdout: every step with `ok`, `error` and its facts
    lotse demo seed           # three cases and Caritas's privacy story, without narration

Both talk to the running services over their public HTTP APIs only, with the token of the role that acts (from the
local Keycloak), and play partner systems with the partner's own Kafka credentials and keys (the partner kit): they
register the partner's public keys, open the referral sealed to it on its inbox, answer and acknowledge on its outbox.
All names are invented; e-mail addresses use the reserved .example domain and land in the local mail sink
(.run/mail) that `make up` starts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import hashlib
import json
import logging
import os
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts import DecodeError, Envelope, decode, encode, new_event, topics
from contracts.events import ClientErased, ConsentWithdrawn, PartnerReferralV2, ReferralAccepted, SealedContent
from contracts.sealed import SealedError
from lotse_cli.dev import find_user, run_dir, user_token
from lotse_kit.kafka import KafkaConnection
from lotse_kit.settings import KitSettings, service_url
from lotse_partner import PartnerKeys, acknowledge, open_sealed

T = TypeVar("T")

app = typer.Typer(help="The demo on the local network: `lotse demo` plays the story; `lotse demo seed` adds demo data.")
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
    asyncio.run(publish(kafka, caritas, acknowledge(withdrawn, keys)))
    console.print(f"[bold]{caritas}[/bold] was told on its inbox and acknowledged the withdrawal (signed)")

    r = http.delete(f"{intake}/v1/clients/{client_id}", headers=jc)
    _check(r, (200, 202), "erase client")
    console.print(f"[bold]{org}[/bold] erased the client's personal data (her data key is destroyed)")
    erased = asyncio.run(next_on_inbox(kafka, caritas, client_id, ClientErased))
    asyncio.run(publish(kafka, caritas, acknowledge(erased, keys)))
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


def _check(r: httpx.Response, status: int | tuple[int, ...], what: str) -> None:
    if r.status_code not in (status if isinstance(status, tuple) else (status,)):
        console.print(f"[red]{what} failed: HTTP {r.status_code} {r.text}[/red]")
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------------------------
# `lotse demo`: the story of the source articles, played on the running network and narrated step by step.
#
# Every step calls the services' public HTTP APIs with the token of the role that acts (a caseworker, a partner system,
# the district's data-protection officer, the auditor), or Kafka with a partner's own credentials, and then waits for the
# effect it narrates (polling with a timeout). A step whose effect does not show stops the story; the command exits 1.
# `--json` prints one document for scripts: every step with `ok` and the facts it established.

JOBCENTER, KIM, CARITAS, KI, DIAKONIE = (
    "jobcenter-kreis-paderborn",
    "kim-kreis-paderborn",
    "caritas-paderborn",
    "ki-kreis-paderborn",
    "diakonie-paderborn-hoexter",
)
BERLIN = ZoneInfo("Europe/Berlin")


class StoryFailed(Exception):
    """A step's call was refused unexpectedly or its effect did not happen within the timeout."""


@dataclass
class Step:
    id: str
    title: str
    ok: bool | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Narrator:
    """Tells people what happens (rich, on stdout), or records it for `--json` (nothing but the document on stdout)."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.console = Console(stderr=json_mode, quiet=json_mode, highlight=False)
        self.steps: list[Step] = []
        self.current: Step | None = None

    def begin(self, step_id: str, title: str) -> Step:
        self.current = Step(step_id, title)
        self.steps.append(self.current)
        self.console.rule(f"[bold]{len(self.steps)}. {title}", align="left")
        return self.current

    def say(self, text: str) -> None:
        self.console.print(Padding(text, (0, 0, 0, 2)))

    def show(self, renderable: Any) -> None:
        self.console.print(Padding(renderable, (0, 0, 0, 2)))

    def fact(self, **facts: Any) -> None:
        assert self.current is not None
        self.current.facts.update(facts)

    def done(self, summary: str) -> None:
        assert self.current is not None
        self.current.ok = True
        self.console.print(Padding(f"[green]✓[/green] {summary}", (0, 0, 1, 2)))

    def failed(self, reason: str) -> None:
        if self.current is not None and self.current.ok is None:
            self.current.ok, self.current.error = False, reason
        self.console.print(Padding(f"[red]✗ {escape(reason)}[/red]", (0, 0, 1, 2)))

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A spinner with the elapsed time while the story waits for an effect (only for people)."""
        if self.json_mode:
            yield
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            progress.add_task(what, total=None)
            yield


async def until(narrator: Narrator, what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, every: float = 0.5) -> T:
    """Polls `probe` until it returns something; after `timeout` seconds the story stops, saying what did not happen."""
    end = time.monotonic() + timeout
    with narrator.waiting(what):
        while True:
            found = await probe()
            if found is not None:
                return found
            if time.monotonic() > end:
                raise StoryFailed(f"did not happen within {timeout:.0f} s: {what}")
            await asyncio.sleep(every)


class Api:
    """The services' HTTP APIs, called with the acting person's or system's token from the local Keycloak."""

    def __init__(self, http: httpx.AsyncClient, urls: dict[str, str]) -> None:
        self.http, self.urls = http, urls
        self._tokens: dict[tuple[str | None, str], tuple[float, str]] = {}

    def headers(self, org: str | None, role: str) -> dict[str, str]:
        cached = self._tokens.get((org, role))
        if cached is None or cached[0] < time.monotonic():  # Keycloak's access tokens live 5 minutes; renew well before
            cached = (time.monotonic() + 120, user_token(find_user(org, role)))
            self._tokens[(org, role)] = cached
        return {"Authorization": f"Bearer {cached[1]}"}

    async def call(
        self, method: str, service: str, path: str, as_: tuple[str | None, str], *, json: Any = None, params: Any = None
    ) -> httpx.Response:
        url = self.urls[service] + path
        try:
            return await self.http.request(method, url, headers=self.headers(*as_), json=json, params=params)
        except httpx.TransportError as exc:
            raise StoryFailed(f"the {service} service did not answer {method} {url}: {type(exc).__name__} {exc}") from None

    @staticmethod
    def expect(r: httpx.Response, status: int | tuple[int, ...], what: str) -> Any:
        if r.status_code not in (status if isinstance(status, tuple) else (status,)):
            raise StoryFailed(f"{what}: HTTP {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None


class InboxWatch:
    """A partner's inbox, read with the partner's own Kafka credentials from where it ended when the story began
    (the inbox keeps every earlier run's records), without a consumer group: watching commits nothing.

    The partner kit's typed inbox consumer (being built in `lotse_partner/`) will replace this and `publish`: the story
    then hands it the partner's handler and lets it open, dispatch and commit."""

    def __init__(self, org: str) -> None:
        self.org, self.kafka = org, partner_kafka(org)
        self.topic = KitSettings().topic_namespace + topics.partner_inbox(org)
        self.keys = partner_keys(org)
        self.records: list[Envelope[Any]] = []
        self.taken: set[uuid.UUID] = set()
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        # Without a group every partition of the subscribed topic is assigned to this consumer at start.
        self.consumer = AIOKafkaConsumer(self.topic, group_id=None, enable_auto_commit=False, **self.kafka.aiokafka())
        await self.consumer.start()
        tps = sorted(self.consumer.assignment())
        if not tps:
            raise StoryFailed(f"{self.org} cannot read its inbox {self.topic} (not provisioned? run `lotse admin provision`)")
        for tp, offset in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, offset)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _poll(self) -> None:
        assert self.consumer is not None
        for recs in (await self.consumer.getmany(timeout_ms=300)).values():
            for rec in recs:
                with contextlib.suppress(DecodeError):
                    self.records.append(decode(rec.headers, rec.value))

    async def next(self, narrator: Narrator, what: str, kind: type, client_id: str, timeout: float, **match: str) -> Envelope[Any]:
        """The first record of `kind` about the client (and with `match`'s data fields) not taken before."""

        async def probe() -> Envelope[Any] | None:
            await self._poll()
            for env in self.records:
                data = env.data
                if env.id in self.taken or not isinstance(data, kind) or str(getattr(data, "client_id", "")) != client_id:
                    continue
                if all(str(getattr(data, k, "")) == v for k, v in match.items()):
                    self.taken.add(env.id)
                    return env
            return None

        try:
            return await until(narrator, what, probe, timeout, every=0)
        except StoryFailed as exc:  # name where it looked: services on another cluster publish where the partner cannot see
            raise StoryFailed(f"{exc} (read as partner-{self.org} from {self.kafka.bootstrap}; do the services use this Kafka?)") from None


async def publish(kafka: KafkaConnection, org: str, env: Envelope[Any]) -> None:
    """An answer or acknowledgement on the partner's own outbox topic, with the partner's credentials."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kafka.aiokafka())
    await producer.start()
    try:
        rec = encode(env)
        topic = KitSettings().topic_namespace + topics.partner_outbox(org)
        await producer.send_and_wait(topic, value=rec.value, key=rec.key, headers=rec.headers)
    finally:
        await producer.stop()


def mail_dirs(given: Path | None) -> list[Path]:
    """Where the local mail sink files messages: `.run/mail`, or the maildir of another services directory whose sink
    already listened on the port when this one started (deploy/local/services.sh then uses that one)."""
    if given is not None:
        return [given]
    root = run_dir()
    return [root / "mail", *sorted(p for p in root.glob("*/mail") if p.is_dir())]


def find_mail(folders: list[Path], message_id: str, since: float) -> tuple[Path, EmailMessage] | None:
    """The message with this Message-ID in the mail sink's maildirs, looking only at files delivered since `since`.
    The sink keeps every message of every earlier run and benchmark; a maildir file's name starts with its delivery
    time in seconds, so older files are skipped by name, without opening them."""
    parser = BytesParser(policy=email.policy.default)
    wanted = f"<{message_id}@notifications.lotse>"
    for root in folders:
        for sub in ("new", "cur"):
            folder = root / sub
            if not folder.is_dir():
                continue
            with os.scandir(folder) as it:
                for entry in it:
                    stamp = entry.name.split(".", 1)[0]
                    if stamp.isdigit() and int(stamp) < since:
                        continue
                    try:
                        with open(entry.path, "rb") as f:
                            head = parser.parse(f, headersonly=True)
                        if head.get("Message-ID", "").strip() == wanted:
                            with open(entry.path, "rb") as f:
                                msg = parser.parse(f)
                            assert isinstance(msg, EmailMessage)
                            return root, msg
                    except OSError:  # moved from new/ to cur/ meanwhile
                        continue
    return None


def mail_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


# RFC 9162 §2.1.3.2 and §2.1.4.2, written out here so that the demo checks the log as an outside auditor would,
# with nothing of the audit service's own tree code.
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify_inclusion(leaf_hash: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]) -> bool:
    if first == second:
        return not proof and first_root == second_root
    if not 0 < first < second or not proof:
        return False
    path = ([first_root] if first & (first - 1) == 0 else []) + list(proof)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _h(b"\x01" + c + fr), _h(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


def head_signature_valid(head: dict[str, Any], public_key: bytes) -> bool:
    """The tree head's Ed25519 signature over RFC 6962 §3.5's TreeHeadSignature bytes."""
    signed = struct.pack(">BBQQ", 0, 1, int(head["timestamp"]), int(head["tree_size"])) + base64.b64decode(head["sha256_root_hash"])
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(head["tree_head_signature"]), signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def pinned_audit_key() -> tuple[bytes | None, str]:
    """The audit log's public key as the operator pins it: from the local stack's signing key file if readable."""
    path = Path(os.environ.get("LOTSE_AUDIT_SIGNING_KEY_FILE", run_dir() / "audit" / "signing-key.pem"))
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None, "the key in the tree head (no pinned key readable)"
    if not isinstance(key, Ed25519PrivateKey):
        return None, "the key in the tree head (the key file holds no Ed25519 key)"
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), f"the pinned key from {path}"


def open_as(env: Envelope[Any], inbox: InboxWatch) -> SealedContent | None:
    try:
        return open_sealed(env, inbox.keys)
    except SealedError as exc:  # e.g. another system registered a newer key for the organisation, with its own key file
        kid = getattr(env.data, "sealed", None) and env.data.sealed.kid
        raise StoryFailed(f"{inbox.org} cannot open the record sealed to {kid} with {partner_keys_file(inbox.org)}: {exc}") from None


def problem_table(problem: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1))
    for k, v in problem.items():
        table.add_row(f"[dim]{k}[/dim]", escape(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
    return table


def quoted(text: str, lines: int) -> Panel:
    body = "\n".join(text.strip().splitlines()[:lines])
    return Panel(escape(body), border_style="dim", expand=False)


class Story:
    """The story, one method per scene; each sets facts on its step and ends with `done` once its effect was seen."""

    def __init__(self, api: Api, n: Narrator, timeout: float, mail_dir: Path | None) -> None:
        self.api, self.n, self.timeout, self.mail_dir = api, n, timeout, mail_dir
        self.mail_found_in: Path | None = None
        self.run = uuid.uuid4().hex[:6]
        self.started = time.time()
        self.caritas = InboxWatch(CARITAS)
        self.ki = InboxWatch(KI)
        self.olena = self.samir = self.consent_id = self.referral_id = ""
        self.head0: dict[str, Any] | None = None

    # -- helpers ------------------------------------------------------------------------------------------------------
    async def client(self, client_id: str, org: str) -> dict[str, Any]:
        return dict(Api.expect(await self.api.call("GET", "intake", f"/v1/clients/{client_id}", (org, "caseworker")), 200, "read the case"))

    async def notification(
        self, client_id: str, org: str, trigger: str, recipient_kind: str, channel: str = "email"
    ) -> dict[str, Any] | None:
        """The finished notification of this trigger for the client, as the organisation sees it in the status API."""
        r = await self.api.call("GET", "notifications", "/v1/notifications", (org, "caseworker"), params={"client_id": client_id})
        for item in Api.expect(r, 200, "read the notifications")["items"]:
            finished = item["status"] in ("delivered", "permanent-failure", "technical-failure", "temporary-failure")
            if finished and (item["trigger_type"], item["recipient_kind"], item["channel"]) == (trigger, recipient_kind, channel):
                return dict(item)
        return None

    async def delivered_mail(self, client_id: str, org: str, trigger: str, what: str) -> tuple[dict[str, Any], EmailMessage]:
        note = await until(self.n, what, lambda: self.notification(client_id, org, trigger, "client"), self.timeout)
        if note["status"] != "delivered":
            raise StoryFailed(f"{what}: the notification ended {note['status']}: {note['reason']}")
        folders = mail_dirs(self.mail_dir)
        where = ", ".join(str(f) for f in folders)
        self.mail_found_in, message = await until(
            self.n,
            f"the message in the local mail sink ({where})",
            lambda: asyncio.to_thread(find_mail, folders, note["id"], self.started - 5),
            self.timeout,
        )
        return note, message

    # -- the scenes ---------------------------------------------------------------------------------------------------
    async def prologue(self) -> None:
        self.n.begin("partners", "Caritas and the KI connect their partner systems")
        for org in (CARITAS, KI):
            keys = partner_keys(org)
            for use in ("enc", "sig"):
                r = await self.api.call(
                    "POST", "consent", f"/v1/organisations/{org}/keys", (org, "partner_system"), json=keys.public(use).model_dump()
                )
                Api.expect(r, (200, 201), f"register {org}'s {use} key")  # 200: registered on an earlier run
            self.n.say(f"[bold]{org}[/bold] registered its public keys with the consent service (kid {keys.public('enc').kid})")
        await self.caritas.start()
        await self.ki.start()
        self.n.say("Both read their inboxes with their own Kafka credentials (.run/kafka/credentials/partner-<org>.properties)")
        r = await self.api.call("GET", "audit", "/v1/audit/tree-head", (None, "auditor"))
        self.head0 = Api.expect(r, 200, "read the audit log's tree head")
        self.n.fact(orgs=[CARITAS, KI], tree_head_at_start=self.head0, run=self.run)
        self.n.done(f"the audit log holds {self.head0['tree_size']} entries before the story begins (signed tree head kept)")

    async def registration(self) -> None:
        self.n.begin("registered", "Olena, from Ukraine, receives asylum-seeker benefits (AsylbLG)")
        body = {
            "given_name": "Olena",
            "family_name": "Demo-Koval",
            "date_of_birth": "1988-04-12",
            "email": f"olena.{self.run}@clients.example",
            "preferred_language": "uk",
            "languages": ["uk", "ru"],
            "needs": ["integration_course"],
            "residence_title": "aufenthg_24",
            "legal_regime": "asylblg",
        }
        r = await self.api.call("POST", "intake", "/v1/clients", (KIM, "caseworker"), json=body)
        self.olena = Api.expect(r, 201, "register Olena")["client_id"]
        self.n.say(
            f"The KIM case manager (Kommunales Integrationsmanagement, [bold]{KIM}[/bold]) registers her: temporary protection "
            f"(§24 AufenthG), benefits under the Asylbewerberleistungsgesetz, Ukrainian. Pseudonymous id [cyan]{self.olena}[/cyan]"
        )
        case = await self.client(self.olena, KIM)
        self.n.fact(client_id=self.olena, responsible_org=case["responsible_org"], legal_regime=case["legal_regime"])
        if case["responsible_org"] != KIM or case["legal_regime"] != "asylblg":
            raise StoryFailed(f"the case reads {case['responsible_org']} / {case['legal_regime']}")
        self.n.done(f"intake holds her case: responsible {KIM}, regime asylblg (her name is stored encrypted, only ids leave intake)")

    async def handover(self) -> None:
        self.n.begin("handed_over", "Rechtskreiswechsel: from AsylbLG to SGB II, the case goes to the Jobcenter")
        body = {"to_org": JOBCENTER, "to_regime": "sgb_ii", "reason": "Rechtskreiswechsel AsylbLG -> SGB II (§24 AufenthG)"}
        r = await self.api.call("POST", "intake", f"/v1/clients/{self.olena}/handover", (KIM, "caseworker"), json=body)
        Api.expect(r, 200, "hand the case over")
        self.n.say(f"{KIM} hands the case to [bold]{JOBCENTER}[/bold]: she now receives Bürgergeld (SGB II) without a break in care")
        case = await self.client(self.olena, JOBCENTER)
        r = await self.api.call("PATCH", "intake", f"/v1/clients/{self.olena}", (KIM, "caseworker"), json={"needs": ["integration_course"]})
        if r.status_code != 403:
            raise StoryFailed(f"KIM could still change the case after the handover: HTTP {r.status_code}")
        note = await until(
            self.n,
            "the Jobcenter's team is told by e-mail",
            lambda: self.notification(self.olena, JOBCENTER, "lotse.case.handed_over", "organisation"),
            self.timeout,
        )
        self.n.fact(
            responsible_org=case["responsible_org"],
            legal_regime=case["legal_regime"],
            previous_org_may_change=False,
            team_notification=note["status"],
        )
        if case["responsible_org"] != JOBCENTER or case["legal_regime"] != "sgb_ii":
            raise StoryFailed(f"after the handover the case reads {case['responsible_org']} / {case['legal_regime']}")
        self.n.done(f"responsible: {JOBCENTER}, regime sgb_ii; {KIM} may no longer change it (403); the team's e-mail: {note['status']}")

    async def consent(self) -> None:
        self.n.begin("consented", "Olena consents, informed in Ukrainian")
        body = {
            "client_id": self.olena,
            "recipients": [CARITAS, JOBCENTER],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact"],
            "form": "written",
            "information": INFO,
            "information_language": "uk",
        }
        r = await self.api.call("POST", "consent", "/v1/consents", (JOBCENTER, "caseworker"), json=body)
        record = Api.expect(r, 201, "record the consent")
        self.consent_id = record["consent_id"]
        self.n.say(
            f"The Jobcenter records her written consent ({self.consent_id}): Caritas may receive her identity and contact for a "
            "referral, and the Jobcenter may write to her. The form she signs, in Ukrainian (the receipt's text):"
        )
        # No `lang`: the receipt comes in the language she was informed in, as the consent records it.
        r = await self.api.call("GET", "consent", f"/v1/consents/{self.consent_id}/receipt", (JOBCENTER, "caseworker"))
        receipt = Api.expect(r, 200, "read the receipt")
        self.n.show(quoted(receipt["text"], 12))
        note, message = await self.delivered_mail(self.olena, JOBCENTER, "lotse.consent.granted", "her copy of the receipt by e-mail")
        self.n.say(f"Her copy arrived in the mail sink: [bold]{escape(str(message['Subject']))}[/bold] ({message['Content-Language']})")
        self.n.fact(
            consent_id=self.consent_id,
            status=record["status"],
            information_language=record["information_language"],
            receipt_language=receipt["language"],
            mail_language=note["language"],
            mail_subject=str(message["Subject"]),
        )
        if record["information_language"] != "uk" or receipt["language"] != "uk" or note["language"] != "uk":
            raise StoryFailed(f"the receipt came in {receipt['language']}, the e-mail in {note['language']}, not in Ukrainian")
        self.n.done("consent active; the form and her e-mailed receipt are in Ukrainian")

    async def referral(self) -> None:
        self.n.begin("referred", "The Jobcenter refers her to Caritas' migration counselling")
        body = {"need": "integration_course", "categories": ["identity", "contact"], "reason": "Integrationskurs mit Kinderbetreuung"}
        r = await self.api.call("POST", "intake", f"/v1/clients/{self.olena}/referrals", (JOBCENTER, "caseworker"), json=body)
        sent = Api.expect(r, 201, "send the referral")
        self.referral_id = sent["referral_id"]
        self.n.say(
            f"The process plan (Ablaufplan) for [italic]integration_course[/italic] routes it to [bold]{sent['to_org']}[/bold], "
            f"service {sent['service']}; the consent service allowed it. Intake publishes only ids; the consent gate seals her data "
            "to Caritas' key."
        )
        env = await self.caritas.next(
            self.n, "the sealed referral on Caritas' inbox", PartnerReferralV2, self.olena, self.timeout, referral_id=self.referral_id
        )
        opened = open_as(env, self.caritas)
        who = opened.personal_data.identity if opened else None
        contact = opened.personal_data.contact if opened else None
        self.n.say(
            f"[bold]{CARITAS}[/bold] (its own credentials) opened the record sealed to its key {env.data.sealed.kid}: "
            f"{who.given_name if who else '?'} {who.family_name if who else '?'}, {contact.email if contact else '?'}; "
            f"categories {', '.join(env.data.categories)}, consent {env.data.consent_id}"
        )
        self.n.fact(referral_id=self.referral_id, to_org=sent["to_org"], service=sent["service"], sealed_kid=env.data.sealed.kid)
        self.n.fact(opened_family_name=who.family_name if who else None, consent_id=str(env.data.consent_id))
        if who is None or who.family_name != "Demo-Koval":
            raise StoryFailed("Caritas could not open her identity")
        self.n.done("the referral reached Caritas, readable only with Caritas' private key")

    async def acceptance(self) -> None:
        self.n.begin("accepted", "Caritas accepts and offers an appointment")
        day = datetime.now(BERLIN).date() + timedelta(days=7)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        appointment = datetime.combine(day, dt_time(10, 0), BERLIN)
        answer = ReferralAccepted(
            client_id=uuid.UUID(self.olena),
            referral_id=uuid.UUID(self.referral_id),
            to_org=CARITAS,
            from_org=JOBCENTER,
            accepted_at=datetime.now(UTC),
            appointment_at=appointment,
        )
        await publish(self.caritas.kafka, CARITAS, new_event(answer, source=f"/partners/{CARITAS}", acting_org=CARITAS))
        self.n.say(f"Caritas' system publishes lotse.referral.accepted on its own outbox, appointment {appointment:%d.%m.%Y %H:%M}")

        async def accepted() -> dict[str, Any] | None:
            r = await self.api.call("GET", "intake", f"/v1/referrals/{self.referral_id}", (JOBCENTER, "caseworker"))
            ref = Api.expect(r, 200, "read the referral")
            # "completed": another system of Caritas's (a partner-kit example) may have answered on from there
            return dict(ref) if ref["status"] in ("accepted", "completed") else None

        ref = await until(self.n, "intake records the acceptance", accepted, self.timeout)
        self.n.fact(status=ref["status"], appointment_at=appointment.isoformat())
        self.n.done("the Jobcenter's worklist shows the referral accepted")

    async def expiry(self) -> None:
        self.n.begin("notified", "Her residence title's expiry approaches: she is told in Ukrainian")
        until_day = datetime.now(BERLIN).date() + timedelta(days=80)
        r = await self.api.call(
            "PATCH", "intake", f"/v1/clients/{self.olena}", (JOBCENTER, "caseworker"), json={"residence_valid_until": until_day.isoformat()}
        )
        Api.expect(r, 200, "record the title's end")
        case = await self.client(self.olena, JOBCENTER)
        deadline = next((d for d in case["deadlines"] if d["kind"] == "residence_title_expiry" and d["status"] == "open"), None)
        if deadline is None:
            raise StoryFailed("no open residence_title_expiry deadline after recording the title's end")
        self.n.say(
            f"The Jobcenter records that her §24 permit ends on {until_day:%d.%m.%Y}. Intake registers the deadline with reminders "
            f"{deadline['lead_times_days']} days before; the {max(deadline['lead_times_days'])}-day reminder is due already, so the "
            "deadline scheduler emits lotse.deadline.approaching at its next scan (LOTSE_INTAKE_DEADLINE_SCAN_INTERVAL_S), no waiting "
            "for weeks."
        )
        note, message = await self.delivered_mail(
            self.olena, JOBCENTER, "lotse.deadline.approaching", "the scheduler's reminder and the e-mail to her"
        )
        self.n.say(f"From the mail sink ({self.mail_found_in}), To: {message['To']}, Content-Language: {message['Content-Language']}")
        self.n.show(Panel(escape(mail_text(message).strip()), title=escape(str(message["Subject"])), border_style="cyan", expand=False))
        self.n.fact(
            deadline_id=deadline["deadline_id"],
            last_day=deadline["last_day"],
            notification_id=note["id"],
            language=note["language"],
            status=note["status"],
            mail_subject=str(message["Subject"]),
            mail_language=str(message["Content-Language"]),
            mail_dir=str(self.mail_found_in),
        )
        if note["language"] != "uk":
            raise StoryFailed(f"the reminder went out in {note['language']}, not in Ukrainian")
        self.n.done("the reminder reached her, in Ukrainian, on behalf of the Jobcenter")

    async def neighbour(self) -> None:
        self.n.begin("neighbour", "Her neighbour Samir, §104c Chancen-Aufenthaltsrecht, goes to the KI's recognition counselling")
        valid_from = datetime.now(BERLIN).date() - timedelta(days=400)
        body = {
            "given_name": "Samir",
            "family_name": "Demo-Haddad",
            "date_of_birth": "2001-09-30",
            "email": f"samir.{self.run}@clients.example",
            "preferred_language": "ar",
            "languages": ["ar"],
            "needs": ["recognition_of_qualifications", "interpreter"],
            "residence_title": "aufenthg_104c",
            "residence_valid_from": valid_from.isoformat(),
            "education_qualifications": "Elektroniker (Berufsausbildung, Aleppo 2019)",
        }
        r = await self.api.call("POST", "intake", "/v1/clients", (KIM, "caseworker"), json=body)
        self.samir = Api.expect(r, 201, "register Samir")["client_id"]
        case = await self.client(self.samir, KIM)
        end = next((d for d in case["deadlines"] if d["kind"] == "chancen_aufenthalt_end"), None)
        if end is None:
            raise StoryFailed("no chancen_aufenthalt_end deadline for a §104c title")
        self.n.say(
            f"KIM registers him ([cyan]{self.samir}[/cyan]), Arabic-speaking, §104c title since {valid_from:%d.%m.%Y}. Intake "
            f"computes the end of the 18 months: last day [bold]{end['last_day']}[/bold]. {escape(end['legal_note'] or '')}"
        )
        grant: dict[str, Any] = {
            "client_id": self.samir,
            "recipients": [KI],
            "purposes": ["referral", "interpreter_booking"],
            "categories": ["identity", "contact", "education_qualifications"],
            "form": "written",
            "information": INFO,
            "information_language": "ar",
            "interpreter_used": True,
        }
        consent = Api.expect(await self.api.call("POST", "consent", "/v1/consents", (KIM, "caseworker"), json=grant), 201, "record consent")
        self.n.say(f"He consents, informed in Arabic with an interpreter (consent {consent['consent_id']})")
        referrals = []
        for need, categories in (
            ("recognition_of_qualifications", ["identity", "contact", "education_qualifications"]),
            ("interpreter", ["identity", "contact"]),
        ):
            body = {"need": need, "categories": categories, "reason": "Anerkennung Berufsabschluss, Termin mit Sprachmittlung Arabisch"}
            r = await self.api.call("POST", "intake", f"/v1/clients/{self.samir}/referrals", (KIM, "caseworker"), json=body)
            referrals.append(Api.expect(r, 201, f"refer for {need}"))
        for ref in referrals:
            env = await self.ki.next(
                self.n,
                f"the KI receives the {ref['service']} referral",
                PartnerReferralV2,
                self.samir,
                self.timeout,
                referral_id=ref["referral_id"],
            )
            opened = open_as(env, self.ki)
            quals = opened.personal_data.education_qualifications if opened else None
            self.n.say(
                f"[bold]{KI}[/bold] / {ref['service']}: opened with its key; categories {', '.join(env.data.categories)}"
                + (f"; qualifications: {escape(str(quals))}" if quals else "")
            )
        self.n.fact(
            client_id=self.samir,
            chancen_last_day=end["last_day"],
            legal_note=end["legal_note"],
            consent_id=consent["consent_id"],
            interpreter_used=consent.get("interpreter_used"),
            referrals=[{"referral_id": r["referral_id"], "to_org": r["to_org"], "service": r["service"]} for r in referrals],
        )
        self.n.done("recognition counselling and an Arabic interpreter booked through the KI, both sealed to the KI")

    async def refusal(self) -> None:
        self.n.begin("refused", "A referral without consent is refused")
        body = {"need": "psychosocial_support", "categories": ["identity", "contact"]}
        r = await self.api.call("POST", "intake", f"/v1/clients/{self.olena}/referrals", (JOBCENTER, "caseworker"), json=body)
        if r.status_code != 409 or not r.headers.get("content-type", "").startswith("application/problem+json"):
            raise StoryFailed(f"expected 409 problem+json, got HTTP {r.status_code} {r.headers.get('content-type')}: {r.text[:300]}")
        problem = r.json()
        self.n.say(f"The Jobcenter would like Diakonie's psychosocial counselling for her, but she never consented to {DIAKONIE}:")
        self.n.say(f"HTTP {r.status_code} {r.headers['content-type']}")
        self.n.show(problem_table(problem))
        case = await self.client(self.olena, JOBCENTER)
        to_diakonie = [x for x in case["referrals"] if x["to_org"] == DIAKONIE]
        self.n.fact(status=r.status_code, problem=problem, referrals_to_recipient=len(to_diakonie))
        if problem.get("type") != "urn:lotse:problem:consent-required" or to_diakonie:
            raise StoryFailed(f"refused as {problem.get('type')}, referrals to {DIAKONIE}: {len(to_diakonie)}")
        self.n.done("nothing was written or sent: no referral, no disclosure request, nothing on any topic")

    async def withdrawal(self) -> None:
        self.n.begin("withdrawn", "Olena withdraws her consent")
        r = await self.api.call("POST", "consent", f"/v1/consents/{self.consent_id}/withdraw", (JOBCENTER, "caseworker"))
        record = Api.expect(r, 200, "withdraw the consent")
        self.n.say(
            f"The Jobcenter records the withdrawal (GDPR Art. 7(3)); data already went to: {', '.join(record['disclosed_to']) or '-'}"
        )
        env = await self.caritas.next(self.n, "Caritas is told on its inbox", ConsentWithdrawn, self.olena, self.timeout)
        await publish(self.caritas.kafka, CARITAS, acknowledge(env, self.caritas.keys))
        self.n.say(f"[bold]{CARITAS}[/bold] stops processing her data and acknowledges on its outbox, signed with its key")
        team = await until(
            self.n,
            "Caritas' team is told by e-mail",
            lambda: self.notification(self.olena, CARITAS, "lotse.consent.withdrawn", "organisation"),
            self.timeout,
        )
        self.n.say(f"Caritas' team was told by e-mail too ({team['template']}, {team['status']})")

        async def acknowledged() -> dict[str, Any] | None:
            r = await self.api.call("GET", "consent", f"/v1/clients/{self.olena}/disclosures", (JOBCENTER, "caseworker"))
            acks = Api.expect(r, 200, "read the disclosures")["acknowledgements"]
            done = [a for a in acks if a["org"] == CARITAS and a["kind"] == "withdrawal" and a["status"] == "acknowledged"]
            return dict(done[0]) if done else None

        ack = await until(self.n, "the consent service records Caritas' acknowledgement", acknowledged, self.timeout)
        body = {"need": "integration_course", "categories": ["identity", "contact"]}
        r = await self.api.call("POST", "intake", f"/v1/clients/{self.olena}/referrals", (JOBCENTER, "caseworker"), json=body)
        problem = r.json() if r.headers.get("content-type", "").startswith("application/problem+json") else {}
        self.n.say(
            f"What it stops: a new referral to Caritas is refused, HTTP {r.status_code}: {escape(str(problem.get('reason', r.text[:200])))}"
        )
        self.n.say("and the Jobcenter can no longer contact her through Lotse (the contact lookup needs the same consent)")
        self.n.fact(
            status=record["status"],
            disclosed_to=record["disclosed_to"],
            acknowledged_by=ack["org"],
            acknowledged_at=ack["acknowledged_at"],
            team_notification=team["status"],
            new_referral_status=r.status_code,
            new_referral_reason=problem.get("reason"),
        )
        if record["status"] != "withdrawn" or r.status_code != 409 or not str(problem.get("reason", "")).startswith("withdrawn"):
            raise StoryFailed(f"after the withdrawal: status {record['status']}, new referral HTTP {r.status_code} {problem.get('reason')}")
        self.n.done("withdrawn, Caritas acknowledged (signed), further disclosures refused")

    async def audit_report(self) -> None:
        self.n.begin("audited", "The data-protection officer reads the audit report")

        async def report() -> dict[str, Any] | None:
            r = await self.api.call("GET", "audit", f"/v1/audit/subjects/{self.olena}/report", (None, "dpo"), params={"format": "json"})
            doc = Api.expect(r, 200, "read the Art. 15 report")
            statuses = {c["consent_id"]: c["status"] for c in doc["consents"]}
            referral = {x["referral_id"]: x["status"] for x in doc["referrals"]}
            complete = (
                statuses.get(self.consent_id) == "withdrawn"
                and any(d["recipient"] == CARITAS for d in doc["disclosures"])
                and referral.get(self.referral_id) in ("accepted", "completed")
                and doc.get("handovers")
            )
            return dict(doc) if complete else None

        doc = await until(self.n, "the log has ingested and signed every step of the story", report, self.timeout)
        table = Table("what", "details", "log entries", box=None, padding=(0, 1))
        for c in doc["consents"]:
            table.add_row(
                "consent", f"{c['status']}: {', '.join(c['recipients'])} for {', '.join(c['purposes'])}", _entries(c["log_entries"])
            )
        for h in doc["handovers"]:
            table.add_row("handover", f"{h['from_org']} -> {h['to_org']}", _entries([h["log_entry"]]))
        for x in doc["referrals"]:
            table.add_row("referral", f"{x['from_org']} -> {x['to_org']} ({x['service']}): {x['status']}", _entries(x["log_entries"]))
        for d in doc["disclosures"]:
            table.add_row(
                "disclosure", f"{d['recipient']}: {', '.join(d['categories'])} under consent {d['consent_id']}", _entries([d["log_entry"]])
            )
        for d in doc["deliveries"]:
            table.add_row("delivery", f"{d['recipient']} inbox: {d['event_type']} {', '.join(d['categories'])}", _entries([d["log_entry"]]))
        for b in doc["blocked"]:
            table.add_row("refused", f"{b['recipient']}: missing {', '.join(b['missing_categories'])}", _entries([b["log_entry"]]))
        self.n.show(table)
        self.n.say(
            f"{doc['entries_examined']} entries about her, under tree head {doc['tree_head']['tree_size']}; tampered: "
            f"{len(doc['tampered_entries'])}. The refusal of step 'refused' is not in the log: intake refuses before anything "
            'is written (a metric counts it, lotse_intake_referrals_total{outcome="refused_no_consent"}).'
        )
        self.n.fact(
            client_id=self.olena,
            language=doc["language"],
            consents=[{"consent_id": c["consent_id"], "status": c["status"]} for c in doc["consents"]],
            disclosures=[d["recipient"] for d in doc["disclosures"]],
            referrals=[{"referral_id": x["referral_id"], "status": x["status"]} for x in doc["referrals"]],
            handovers=[{"from_org": h["from_org"], "to_org": h["to_org"]} for h in doc["handovers"]],
            entries_examined=doc["entries_examined"],
            tampered_entries=doc["tampered_entries"],
            tree_size=doc["tree_head"]["tree_size"],
        )
        if doc["tampered_entries"]:
            raise StoryFailed(f"the report lists tampered entries: {doc['tampered_entries']}")
        self.n.done(f"the report (in her language, {doc['language']}) shows the story, each line backed by log entries")

    async def verification(self) -> None:
        self.n.begin("verified", "The auditor verifies the Merkle log")
        auditor = (None, "auditor")
        head = Api.expect(await self.api.call("GET", "audit", "/v1/audit/tree-head", auditor), 200, "read the tree head")
        assert self.head0 is not None
        pinned, which = pinned_audit_key()
        key = pinned if pinned is not None else base64.b64decode(head["public_key"])
        signatures = head_signature_valid(self.head0, key) and head_signature_valid(head, key)
        first, second = int(self.head0["tree_size"]), int(head["tree_size"])
        r = await self.api.call("GET", "audit", "/v1/audit/consistency-proof", auditor, params={"first": first, "second": second})
        proof = [base64.b64decode(h) for h in Api.expect(r, 200, "read the consistency proof")["consistency"]]
        root0, root = base64.b64decode(self.head0["sha256_root_hash"]), base64.b64decode(head["sha256_root_hash"])
        consistent = verify_consistency(first, second, root0, root, proof)
        self.n.say(
            f"Tree heads at the start ({first} entries) and now ({second}): signatures checked with {escape(which)}: "
            f"{'valid' if signatures else '[red]INVALID[/red]'}; consistency proof (the log only grew): "
            f"{'valid' if consistent else '[red]INVALID[/red]'}"
        )
        entries: list[dict[str, Any]] = []
        for client_id in (self.olena, self.samir):
            cursor = None
            while True:
                params = {"client_id": client_id, "limit": 1000} | ({"cursor": cursor} if cursor else {})
                page = Api.expect(await self.api.call("GET", "audit", "/v1/audit/entries", auditor, params=params), 200, "read entries")
                entries += [e for e in page["items"] if e["index"] < second]
                cursor = page["next_cursor"]
                if not cursor:
                    break
        bad: list[int] = []
        with self.n.waiting(f"inclusion proofs of {len(entries)} entries"):
            for e in entries:
                leaf = _h(b"\x00" + base64.b64decode(e["entry_b64"]))
                r = await self.api.call(
                    "GET", "audit", f"/v1/audit/entries/{e['index']}/inclusion-proof", auditor, params={"tree_size": second}
                )
                p = Api.expect(r, 200, "read an inclusion proof")
                path = [base64.b64decode(h) for h in p["audit_path"]]
                if leaf != base64.b64decode(e["leaf_hash"]) or not verify_inclusion(leaf, e["index"], second, path, root):
                    bad.append(e["index"])
        types = sorted({(e["entry"].get("ce") or {}).get("type") or e["entry"].get("kind", "?") for e in entries})
        self.n.say(f"{len(entries)} entries about Olena and Samir ({', '.join(types)}) each proven included in the signed tree")
        self.n.say("The whole log: [bold]lotse audit verify --url " + self.api.urls["audit"] + "[/bold] (streams every entry)")
        self.n.fact(
            tree_size_at_start=first,
            tree_size=second,
            signatures_valid=signatures,
            key=which,
            consistent=consistent,
            entries_checked=len(entries),
            inclusion_failures=bad,
            event_types=types,
        )
        if not (signatures and consistent) or bad or not entries:
            raise StoryFailed(f"verification failed: signatures {signatures}, consistency {consistent}, bad entries {bad[:10]}")
        self.n.done("signed, consistent, and every entry of the story is in it unchanged")


def _entries(indexes: list[int]) -> str:
    return ", ".join(str(i) for i in indexes[:4]) + (" …" if len(indexes) > 4 else "")


SCENES = (
    "prologue",
    "registration",
    "handover",
    "consent",
    "referral",
    "acceptance",
    "expiry",
    "neighbour",
    "refusal",
    "withdrawal",
    "audit_report",
    "verification",
)


async def play(n: Narrator, urls: dict[str, str], timeout: float, mail_dir: Path | None) -> bool:
    async with httpx.AsyncClient(timeout=30) as http:
        story = Story(Api(http, urls), n, timeout, mail_dir)
        try:
            for scene in SCENES:
                await getattr(story, scene)()
            return True
        except StoryFailed as exc:
            n.failed(str(exc))
        except (httpx.HTTPError, KafkaError, LookupError, FileNotFoundError, RuntimeError) as exc:
            n.failed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # an answer of an unexpected shape: still a story that did not play out, said as such
            n.failed(f"unexpected {type(exc).__name__}: {exc}")
        finally:
            await story.caritas.stop()
            await story.ki.stop()
        return False


@app.callback(invoke_without_command=True)
def story(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout (every step, ok, facts); no narration.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each effect before the story stops.")] = 120.0,
    mail_dir: Annotated[Path | None, typer.Option(help="The local mail sink's maildir; default .run/mail and .run/*/mail.")] = None,
    intake: str = service_url("intake"),
    consent: str = service_url("consent"),
    notifications: str = service_url("notifications"),
    audit: str = service_url("audit"),
) -> None:
    """Play the story of the source articles on the running network (`make up`) and narrate it; exit 1 if it did not play out.

    A Ukrainian client moves from AsylbLG to SGB II and is handed over to the Jobcenter, consents in Ukrainian, is referred
    to Caritas (which opens the sealed referral with its own credentials and keys, and accepts), and is reminded in
    Ukrainian that her title expires; her neighbour (§104c) goes to the KI's recognition counselling with an interpreter;
    a referral without consent is refused; her consent is withdrawn; the DPO's audit report shows it, the auditor verifies."""
    if ctx.invoked_subcommand is not None:
        return
    n = Narrator(json_out)
    # aiokafka logs every failed reconnect at ERROR; the story reports what did not happen in its own words instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    urls = {"intake": intake, "consent": consent, "notifications": notifications, "audit": audit}
    ok = asyncio.run(play(n, urls, timeout, mail_dir))
    if json_out:
        doc = {"ok": ok, "steps": [asdict(s) for s in n.steps], "scenes": len(SCENES)}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    elif ok:
        n.console.print(f"[bold green]The story played out: {len(n.steps)} steps.[/bold green]")
    else:
        n.console.print(f"[bold red]The story stopped at step {len(n.steps)} ({n.steps[-1].id if n.steps else '-'}).[/bold red]")
    raise typer.Exit(0 if ok else 1)
