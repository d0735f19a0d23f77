"""A quick in-process measurement of the gate (not collected: run it by name).

    .venv/bin/python -m pytest services/consent/tests/measure_gate.py -q -s

K disclosure requests against the real intake app served over HTTP in this process: decided one at a time (as
without a batch: one intake request each), in one transaction without a prepare, and as one prepared batch (`prepare_gate_batch`, then the handlers in one
transaction, as the kit runs a batch). Prints this process's CPU time per request (gate and intake together), the
gate's database round trips per request, and intake requests per batch. No test: it asserts nothing about speed.
"""

from __future__ import annotations

import contextvars
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts import new_event
from contracts.events import DisclosureRequested
from contracts.sealed import generate_key
from contracts.vocab import DataCategory, Purpose
from lotse_kit.auth import AuthSettings, ServiceTokens
from lotse_kit.network import OrgDirectory, load_network
from services.consent.adapters.intake import HttpIntakeDisclosures
from services.intake.tests.conftest import HERE as INTAKE_TESTS
from services.intake.tests.conftest import JOBCENTER, KI, client_body, clock, consent, directory, h, make_intake  # noqa: F401
from tests.fixtures import local_issuer, serving

from .conftest import StartService
from .test_gate_batch import _as_one_batch, _one_at_a_time

K = int(os.environ.get("MEASURE_K", "50"))
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("measure_counting", default=False)
_, KI_PUBLIC = generate_key("ki-kreis-paderborn-enc-1", "enc")


def _directory() -> OrgDirectory:
    network = load_network(INTAKE_TESTS / "network.yaml")
    orgs = [o.model_copy(update={"keys": [KI_PUBLIC]}) if o.id == KI else o for o in network.organisations]
    return OrgDirectory.of(network.model_copy(update={"organisations": orgs}))


async def test_measure_gate(make_intake, consent, start_consent: StartService) -> None:  # noqa: F811
    trips = 0
    originals: dict[str, Any] = {}
    for name in ("_do_execute", "execute"):
        original = getattr(asyncpg.connection.Connection, name)
        originals[name] = original

        def counted(self, *a, __o=original, __simple=name == "execute", **k):
            nonlocal trips
            if _COUNTING.get() and (not __simple or len(a) == 1):
                trips += 1
            return __o(self, *a, **k)

        setattr(asyncpg.connection.Connection, name, counted)
    tokens = ServiceTokens(AuthSettings(issuer=local_issuer().signer.issuer, client_id="lotse-consent", client_secret="test-only"))
    try:
        async with make_intake() as (intake_app, intake_http), serving(intake_app, lifespan="off") as intake_url:
            adapter = HttpIntakeDisclosures(intake_url, tokens=tokens)
            async with start_consent(intake=adapter, directory=_directory()) as svc:
                clients, referrals = [], []
                for _ in range(20):
                    r = await intake_http.post("/v1/clients", json=client_body(), headers=h(JOBCENTER))
                    c = uuid.UUID(r.json()["client_id"])
                    clients.append(c)
                    await svc.grant(c, org=JOBCENTER, recipients=[KI], categories=["identity", "contact"])
                    consent.grant(c, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
                    body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"], "reason": "Termin"}
                    r = await intake_http.post(f"/v1/clients/{c}/referrals", json=body, headers=h(JOBCENTER))
                    referrals.append(uuid.UUID(r.json()["referral_id"]))

                def requests() -> list[Any]:
                    return [
                        new_event(
                            DisclosureRequested(
                                client_id=clients[i % 20],
                                request_id=uuid.uuid4(),
                                referral_id=referrals[i % 20],
                                from_org=JOBCENTER,
                                to_org=KI,
                                purpose=Purpose.REFERRAL,
                                service="sprachmittlerpool",
                                categories=[DataCategory.IDENTITY, DataCategory.CONTACT],
                                requested_at=datetime.now(UTC),
                            ),
                            source="/lotse/intake",
                            acting_org=JOBCENTER,
                        )
                        for i in range(K)
                    ]

                from services.consent.handlers.disclosures import prepare_gate_batch

                await _one_at_a_time(svc, requests()[:5])  # warm up
                for label in ("one-at-a-time", "one-transaction", "batch", "one-at-a-time", "one-transaction", "batch"):
                    envs = requests()
                    trips, calls, batch_calls = 0, adapter.calls, adapter.batch_calls
                    token = _COUNTING.set(True)
                    cpu = time.process_time()
                    if label == "batch":
                        await _as_one_batch(svc, envs, await prepare_gate_batch(envs, svc.deps))
                    elif label == "one-transaction":  # the kit's batch without this prepare
                        await _as_one_batch(svc, envs, None)
                    else:
                        await _one_at_a_time(svc, envs)
                    cpu = time.process_time() - cpu
                    _COUNTING.reset(token)
                    made = await svc.pool.fetchval(
                        "SELECT count(*) FROM disclosures WHERE request_id = ANY($1::uuid[]) AND outcome = 'made'",
                        [e.data.request_id for e in envs],
                    )
                    print(
                        f"\nMEASURE {label} K={K} made={made} cpu_ms_per_request={1000 * cpu / K:.3f} "
                        f"gate_trips_per_request={trips / K:.2f} intake_requests={adapter.calls - calls + adapter.batch_calls - batch_calls}"
                    )
            await adapter.aclose()
    finally:
        for name, original in originals.items():
            setattr(asyncpg.connection.Connection, name, original)
