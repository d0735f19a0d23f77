"""The gateway in process against the real broker and database, a test network with an HTTPS pull partner (AWO),
an HTTPS push partner (IN VIA, posting to a loopback receiver) and a Kafka partner (Caritas), and helpers to put
records on an inbox as the consent service does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contracts import Envelope, new_event, topics
from contracts.events import ReferralAccepted
from lotse_kit.clock import ManualClock
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory, parse_network
from services.gateway.bootstrap import bootstrap
from services.gateway.config import GatewaySettings
from tests.auth.conftest import keycloak  # noqa: F401 - a fixture, used by name (test_journey.py)
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, as_org, in_process, serving

JOBCENTER = "jobcenter-paderborn"
AWO = "awo-paderborn"  # HTTPS, pull
INVIA = "in-via-paderborn"  # HTTPS, push
CARITAS = "caritas-paderborn"  # Kafka

TEST_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes of key, tests only


def network_yaml(push_url: str) -> str:
    return f"""
version: 1
district: Kreis Paderborn
name: Integrationsnetzwerk (gateway test)
organisations:
  - id: {JOBCENTER}
    name: Jobcenter
    kind: jobcenter
    languages: [de]
    contact_email: team@jobcenter.lotse-demo.de
  - id: {AWO}
    name: AWO Paderborn
    kind: welfare_association
    languages: [de, tr]
    contact_email: it@awo.lotse-demo.de
    inbox: {{transport: https, mode: pull}}
  - id: {INVIA}
    name: IN VIA Paderborn
    kind: welfare_association
    languages: [de, en]
    contact_email: it@invia.lotse-demo.de
    inbox: {{transport: https, mode: push, url: "{push_url}"}}
  - id: {CARITAS}
    name: Caritas Paderborn
    kind: welfare_association
    languages: [de]
    contact_email: it@caritas.lotse-demo.de
"""


def partner(org: str) -> dict[str, str]:
    return as_org(org, "partner_system")


def inbox_event(to_org: str, *, client_id: uuid.UUID | None = None) -> Envelope[Any]:
    """A forwarded copy as the consent service writes it to a partner's inbox (any inbox record will do)."""
    data = ReferralAccepted(
        client_id=client_id or uuid.uuid4(),
        referral_id=uuid.uuid4(),
        to_org="diakonie-paderborn",
        from_org=to_org,
        accepted_at=datetime.now(UTC),
    )
    return new_event(data, source="/lotse/intake", acting_org="diakonie-paderborn")


@dataclass
class Receiver:
    """A partner's webhook endpoint on loopback: answers from a script, then 200; keeps every request."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)  # headers, body, status answered
    script: list[int] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        status = self.script.pop(0) if self.script else 200
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, await request.body(), status))
        return Response(status_code=status)

    def delivered_ids(self) -> list[str]:
        return [h["webhook-id"] for h, _, status in self.requests if 200 <= status < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = Starlette(routes=[Route("/hooks/lotse", r.handle, methods=["POST"])])
    async with serving(app, lifespan="off") as url:
        r.url = url + "/hooks/lotse"
        yield r


class Gateway(RunningService):
    clock: ManualClock | None = None

    async def put_on_inbox(self, org: str, *envs: Envelope[Any]) -> None:
        await self.produce(topics.partner_inbox(org), *envs)


def fast_settings(namespace: str, **overrides: Any) -> GatewaySettings:
    own: dict[str, Any] = dict(
        push_interval_s=0.1,
        push_retry_base_s=0.05,
        push_retry_max_s=0.2,
        push_allow_http=True,
        webhook_keys={INVIA: TEST_SECRET},
        generate_webhook_keys=False,
        unfetched_check_interval_s=0.2,
        reader_idle_s=60,
    )
    return GatewaySettings(**{"topic_namespace": namespace, "kafka_create_topics": True, **FAST_KIT_SETTINGS, **own, **overrides})


@pytest.fixture
def start_gateway(infra: Any, unique: str, topic_namespace: str, kafka_bootstrap: str, receiver: Receiver) -> Callable[..., Any]:
    """`async with start_gateway(clock=None, **settings) as gw:` — the same schema each time, so a second start is a restart."""

    @asynccontextmanager
    async def start(clock: Any = None, **overrides: Any) -> AsyncIterator[Gateway]:
        settings = fast_settings(topic_namespace, **overrides)
        specs = [s for org in (AWO, INVIA, CARITAS) for s in topics.partner_topics(org)]
        await ensure_topics(settings.kafka(), [type(s)(topic_namespace + s.name, s.partitions, s.config) for s in specs])
        directory = OrgDirectory.of(parse_network(network_yaml(receiver.url)))
        app = bootstrap(settings, schema=f"gw_{unique}", clock=clock, directory=directory)
        async with in_process(app) as client:
            gw = Gateway(app, client, topic_namespace, kafka_bootstrap)
            gw.clock = clock
            yield gw

    return start
