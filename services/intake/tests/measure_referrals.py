"""A quick in-process measurement of intake's referral path (not collected: run it by name).

    .venv/bin/python -m pytest services/intake/tests/measure_referrals.py -q -s

Sends N referrals through the app in process (FakeConsent, no HTTP to consent) and prints the CPU time of this
process per referral and the asyncpg round trips per referral (statements executed on any connection). The two
figures are compared before and after a change in the same way; they are no test and assert nothing about speed.
"""

from __future__ import annotations

import contextvars
import os
import time

import asyncpg

from contracts.vocab import DataCategory, Purpose

from .conftest import JOBCENTER, KI, client_body, h

N = int(os.environ.get("MEASURE_N", "200"))
# Only statements of the request itself count (not the relay, consumers or the deadline scanner: other tasks).
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("measure_counting", default=False)


async def test_measure_referral_path(make_intake, consent) -> None:
    trips = 0
    originals = {}
    # One round trip: a prepared statement (`_do_execute`, behind fetch*, and execute with arguments) or a
    # simple query (`execute` without arguments: BEGIN, COMMIT, the pool's reset).
    for name in ("_do_execute", "execute"):
        original = getattr(asyncpg.connection.Connection, name)
        originals[name] = original

        def counted(self, *a, __o=original, __simple=name == "execute", **k):
            nonlocal trips
            if _COUNTING.get() and (not __simple or len(a) == 1):
                trips += 1
            return __o(self, *a, **k)

        setattr(asyncpg.connection.Connection, name, counted)
    try:
        async with make_intake() as (_app, http):
            clients = []
            for _ in range(20):
                r = await http.post("/v1/clients", json=client_body(), headers=h(JOBCENTER))
                clients.append(r.json()["client_id"])
                consent.grant(clients[-1], KI, Purpose.REFERRAL, [DataCategory.IDENTITY, DataCategory.CONTACT])
            headers = h(JOBCENTER)
            body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity", "contact"], "reason": "Termin"}
            for i in range(20):  # warm up
                assert (await http.post(f"/v1/clients/{clients[i % 20]}/referrals", json=body, headers=headers)).status_code == 201
            trips = 0
            token = _COUNTING.set(True)
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(N):
                r = await http.post(f"/v1/clients/{clients[i % 20]}/referrals", json=body, headers=headers)
                assert r.status_code == 201, r.text
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            _COUNTING.reset(token)
            print(
                f"\nMEASURE referrals={N} cpu_ms_per_referral={1000 * cpu / N:.3f} wall_ms={1000 * wall / N:.3f} trips_per_referral={trips / N:.2f}"
            )
    finally:
        for name, original in originals.items():
            setattr(asyncpg.connection.Connection, name, original)
