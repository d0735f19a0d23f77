"""Contacts per batch, not per notification: the consumer's prepare and the delivery worker ask intake's
POST /internal/v1/contacts once per batch (through the real HTTP adapter, against intake's stand-in), read each item as
the single route's answer, keep the consent check at sending, and fall back to one lookup each when the batch request
fails (an intake without the route) or is switched off."""

from __future__ import annotations

import uuid
from typing import Any

from lotse_kit.clock import ManualClock
from services.notifications.adapters import repository as repo
from services.notifications.adapters.contacts import ContactsUnavailable, lookup_all
from services.notifications.domain.model import Channel
from services.notifications.handlers import prepare_triggers, send_batch

from .conftest import AWO, JOBCENTER, IntakeStandIn
from .test_batching import LATER, T0, _record_due_later
from .test_delivery import approaching


async def test_the_batch_answer_of_each_lookup_is_what_the_single_lookup_answers(intake_standin: IntakeStandIn) -> None:
    olena, refused, quiet, unknown = (str(uuid.uuid4()) for _ in range(4))
    intake_standin.add(uuid.UUID(olena), language="uk", email="olena@client.test", phone="+4915100000001")
    intake_standin.add(uuid.UUID(refused), language="de", email="r@client.test")
    intake_standin.refused.add(refused)
    intake_standin.do_not_contact.add(quiet)
    adapter = intake_standin.adapter()
    keys = [(olena, JOBCENTER), (olena, AWO), (refused, JOBCENTER), (quiet, JOBCENTER), (unknown, JOBCENTER), (olena, JOBCENTER)]
    try:
        many = await adapter.lookup_many(keys)
        assert intake_standin.batch_requests == [5]  # one request, each key once
        assert set(many) == set(keys)
        for c, o in dict.fromkeys(keys):
            assert many[(c, o)] == await adapter.lookup(c, o), (c, o)
        assert many[(olena, AWO)].email == "olena@client.test"  # type: ignore[union-attr]
        assert [type(many[k]).__name__ for k in keys[2:5]] == ["NoContact"] * 3
        # More than intake takes in one request: one request per 200.
        intake_standin.batch_requests.clear()
        more = [(str(uuid.uuid4()), JOBCENTER) for _ in range(250)]
        assert len(await adapter.lookup_many(more)) == 250 and intake_standin.batch_requests == [200, 50]
    finally:
        await adapter.aclose()


async def test_an_intake_without_the_batch_route_is_asked_one_by_one(intake_standin: IntakeStandIn) -> None:
    olena = uuid.uuid4()
    intake_standin.add(olena, language="uk", email="olena@client.test")
    intake_standin.batch_route = False  # answers 404 for the route, as an older intake does
    adapter = intake_standin.adapter()
    try:
        try:
            await adapter.lookup_many([(str(olena), JOBCENTER)])
            raise AssertionError("a 404 for the whole request is no answer")
        except ContactsUnavailable:
            pass
        intake_standin.lookups.clear()
        found = await lookup_all(adapter, [(str(olena), JOBCENTER), (str(olena), AWO)], concurrency=2)
        assert found[(str(olena), AWO)] == await adapter.lookup(str(olena), AWO)
        assert intake_standin.batch_requests == [] and len(intake_standin.lookups) == 3  # two in the fallback, one above
        # Switched off: not even the batch request.
        intake_standin.batch_route = True
        intake_standin.lookups.clear()
        await lookup_all(adapter, [(str(olena), JOBCENTER)], concurrency=2, batch=False)
        assert intake_standin.batch_requests == [] and intake_standin.lookups == [(str(olena), JOBCENTER)]
    finally:
        await adapter.aclose()


async def test_the_delivery_worker_asks_once_per_batch_and_still_checks_consent_at_sending(
    start_service: Any, intake_standin: IntakeStandIn, smtp: Any
) -> None:
    adapter = intake_standin.adapter()
    async with start_service(clock=ManualClock(T0), contacts_adapter=adapter) as svc:
        deps = svc.app.state.deps
        clients = await _record_due_later(svc, intake_standin, 5)  # type: ignore[arg-type]
        intake_standin.refused.add(str(clients[4]))  # consent withdrawn between recording and sending
        intake_standin.lookups.clear()
        intake_standin.batch_requests.clear()
        rows = await repo.claim_due(svc.pool, Channel.EMAIL, 50, 60.0, LATER)
        assert len(rows) == 10  # 5 clients, 5 caseworker e-mails
        statuses = await send_batch(rows, deps)
        assert intake_standin.batch_requests == [5] and len(intake_standin.lookups) == 5  # one request, nothing one by one
        assert sorted(s.value for s in statuses) == ["delivered"] * 9 + ["permanent-failure"]
        [refused] = await svc.rows("client_id = $1 AND recipient_kind = 'client'", clients[4])
        assert refused["status"] == "permanent-failure" and "consent" in refused["reason"]
        assert all(len(smtp.to(f"client{i}@client.test")) == 1 for i in range(4)) and smtp.to("client4@client.test") == []

        # An intake without the batch route: the same outcome, one lookup each.
        intake_standin.batch_route = False
        more = await _record_due_later(svc, intake_standin, 3)  # type: ignore[arg-type]
        intake_standin.lookups.clear()
        rows = await repo.claim_due(svc.pool, Channel.EMAIL, 50, 60.0, LATER)
        assert sorted(s.value for s in await send_batch(rows, deps)) == ["delivered"] * 6
        assert sorted(c for c, _ in intake_standin.lookups) == sorted(str(c) for c in more)
    await adapter.aclose()


async def test_the_consumers_prepare_asks_once_per_batch(start_service: Any, intake_standin: IntakeStandIn) -> None:
    adapter = intake_standin.adapter()
    async with start_service(contacts_adapter=adapter) as svc:
        clients = [uuid.uuid4() for _ in range(6)]
        for c in clients[:5]:
            intake_standin.add(c, language="de", email=f"{c}@client.test")
        batch = await prepare_triggers([approaching(c) for c in clients], svc.app.state.deps)
        assert intake_standin.batch_requests == [6] and len(intake_standin.lookups) == 6
        assert {k for k, v in batch.contacts.items() if hasattr(v, "email")} == {(str(c), JOBCENTER) for c in clients[:5]}
        assert type(batch.contacts[(str(clients[5]), JOBCENTER)]).__name__ == "NoContact"  # unknown to intake: prepared too
    await adapter.aclose()
