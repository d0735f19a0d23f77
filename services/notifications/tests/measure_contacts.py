"""A quick in-process measurement of contact lookups per batch (not collected: run it by name).

    .venv/bin/python -m pytest services/notifications/tests/measure_contacts.py -q -s

K contact lookups (K clients, each with a consent to be contacted) as one batch of the delivery worker or of the
consumer's prepare asks them (`adapters.contacts.lookup_all`): notifications' real HTTP adapter against the real intake
app served over HTTP in this process, intake's real decision adapter against the real consent app served over HTTP in
this process. Two shapes, alternated: one lookup each (before: `batch=False`, at most 8 at once) and one batch request.
Prints the HTTP requests per lookup on each hop and this process's CPU time per lookup (all three services together).
No test: it asserts nothing about speed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from lotse_kit.auth import AuthSettings, ServiceTokens
from lotse_kit.network import OrgDirectory, load_network
from services.consent.tests.conftest import StartService, start_consent  # noqa: F401 - consent's fixture
from services.intake.adapters.consent import HttpConsentDecisions
from services.intake.tests.conftest import HERE as INTAKE_TESTS
from services.intake.tests.conftest import JOBCENTER, client_body, clock, consent, directory, h, make_intake  # noqa: F401
from services.notifications.adapters.contacts import IntakeContacts, lookup_all
from tests.fixtures import local_issuer, serving

K = int(os.environ.get("MEASURE_K", "50"))


async def test_measure_contacts(make_intake, start_consent: StartService) -> None:  # noqa: F811
    seen: Counter[str] = Counter()
    original = httpx.AsyncClient.send

    async def counted(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        path = request.url.path
        hop = "intake->consent" if path == "/v1/decisions" else "notifications->intake" if "contact" in path else "other"
        seen[hop] += 1
        return await original(self, request, **kw)

    issuer = local_issuer().signer.issuer
    network = OrgDirectory.of(load_network(INTAKE_TESTS / "network.yaml"))
    httpx.AsyncClient.send = counted  # type: ignore[method-assign]
    try:
        async with start_consent(directory=network) as svc, serving(svc.app, lifespan="off") as consent_url:
            decisions = HttpConsentDecisions(
                consent_url, tokens=ServiceTokens(AuthSettings(issuer=issuer, client_id="lotse-intake", client_secret="test-only"))
            )
            async with make_intake(consent=decisions) as (intake_app, intake_http), serving(intake_app, lifespan="off") as intake_url:
                contacts = IntakeContacts(
                    intake_url,
                    tokens=ServiceTokens(AuthSettings(issuer=issuer, client_id="lotse-notifications", client_secret="test-only")),
                )
                keys = []
                for _ in range(K):
                    r = await intake_http.post("/v1/clients", json=client_body(), headers=h(JOBCENTER))
                    c = r.json()["client_id"]
                    await svc.grant(
                        uuid.UUID(c), org=JOBCENTER, recipients=[JOBCENTER], purposes=["contact_for_notifications"], categories=["contact"]
                    )
                    keys.append((c, JOBCENTER))
                await lookup_all(contacts, keys[:5], concurrency=8, batch=False)  # warm up both shapes
                await lookup_all(contacts, keys[:5], concurrency=8, batch=True)
                for label in ("one-by-one", "batch", "one-by-one", "batch"):
                    seen.clear()
                    cpu = time.process_time()
                    found = await lookup_all(contacts, keys, concurrency=8, batch=label == "batch")
                    cpu = time.process_time() - cpu
                    ok = sum(1 for v in found.values() if getattr(v, "email", None))
                    print(
                        f"\nMEASURE {label} K={K} contacts={ok} cpu_ms_per_lookup={1000 * cpu / K:.3f} "
                        f"requests_per_lookup notifications->intake={seen['notifications->intake'] / K:.3f} "
                        f"intake->consent={seen['intake->consent'] / K:.3f}"
                    )
                await contacts.aclose()
            await decisions.aclose()
    finally:
        httpx.AsyncClient.send = original  # type: ignore[method-assign]
