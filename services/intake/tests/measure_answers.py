"""A quick in-process measurement of a referral answer (not collected: run it by name).

    .venv/bin/python -m pytest services/intake/tests/measure_answers.py -q -s

Sends N referrals, then accepts each through `handlers.referrals._act` (the HTTP answer without FastAPI; the partner
answer runs the same `apply_referral_action`) and prints this process's CPU time per answer and the asyncpg
statements per answer (BEGIN, COMMIT and the pool's reset included). To compare with another version of the code,
run it in a copy of the tree with that version; it asserts nothing about speed.
"""

from __future__ import annotations

import contextvars
import os
import time
import uuid
from datetime import timedelta

import asyncpg

from contracts.vocab import DataCategory, Purpose
from services.intake.domain.referrals import Action, Answer
from services.intake.handlers import referrals

from .conftest import JOBCENTER, KI, client_body, h

N = int(os.environ.get("MEASURE_N", "200"))
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("measure_counting", default=False)


async def test_measure_answer_path(make_intake, consent, monkeypatch) -> None:
    trips = 0
    for name in ("_do_execute", "execute"):
        original = getattr(asyncpg.connection.Connection, name)

        def counted(self, *a, __o=original, __simple=name == "execute", **k):
            nonlocal trips
            if _COUNTING.get() and (not __simple or len(a) == 1):
                trips += 1
            return __o(self, *a, **k)

        monkeypatch.setattr(asyncpg.connection.Connection, name, counted)
    async with make_intake() as (app, http):
        deps = app.state.deps
        clients = []
        for _ in range(20):
            r = await http.post("/v1/clients", json=client_body(), headers=h(JOBCENTER))
            clients.append(r.json()["client_id"])
            consent.grant(clients[-1], KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"]}
        rids = []
        for i in range(N + 20):
            r = await http.post(f"/v1/clients/{clients[i % 20]}/referrals", json=body, headers=h(JOBCENTER))
            assert r.status_code == 201, r.text
            rids.append(uuid.UUID(r.json()["referral_id"]))
        now = deps.clock.now()
        answer = Answer(Action.ACCEPT, now, appointment_at=now + timedelta(days=20))
        for rid in rids[:20]:  # warm up
            await referrals._act(deps, rid, answer, KI)
        trips = 0
        token = _COUNTING.set(True)
        cpu = time.process_time()
        for rid in rids[20:]:
            await referrals._act(deps, rid, answer, KI)
        cpu = time.process_time() - cpu
        _COUNTING.reset(token)
        print(f"\nMEASURE answers={N} cpu_ms_per_answer={1000 * cpu / N:.3f} trips_per_answer={trips / N:.2f}")
