"""The gate's batch (`prepare_gate_batch`, the gate subscription's `prepare`): one request to intake per batch, for
exactly the requests a read-only consent pre-check lets through and with exactly their categories; the handler still
decides under its locks and uses the prefetched content only when its decision allows exactly that; without the
prepare (or when it fails) everything works as one at a time. Real broker and database; intake is conftest's
`FakeIntake`, which counts its batch and single requests.

Some tests play the kit's batch themselves (`_as_one_batch`: the prepare, then every handler in one transaction
with `prepared()` set, as `lotse_kit.consumer` does), so a batch's composition is exact; others go through the
running consumer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from contracts import decode, topics
from contracts.events import Identity, SealedContent
from contracts.sealed import unseal
from contracts.vocab import DataCategory
from lotse_kit.consumer import _prepared
from services.consent.adapters import repository as repo
from services.consent.adapters.intake import DisclosureQuery
from services.consent.handlers.disclosures import GateBatch, Prefetched, gate_disclosure_request, prepare_gate_batch
from tests.fixtures import as_org
from tests.kafka_helpers import eventually, read_topic

from .conftest import CARITAS, DIAKONIE, JOBCENTER, PRIVATE_KEYS, Service, disclosure_request, full_personal_data

JC = as_org(JOBCENTER)
ID, CONTACT, NEEDS, HEALTH = DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.NEEDS, DataCategory.HEALTH
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.+]+")


async def _as_one_batch(svc: Service, envs: Sequence[Any], batch: GateBatch | None) -> None:
    """The gate's handlers for `envs` in one transaction with `batch` as `prepared()`, as the kit runs a batch."""
    token = _prepared.set(batch)
    try:
        async with svc.pool.acquire() as conn, conn.transaction():
            for env in envs:
                await gate_disclosure_request(env, conn, svc.deps)
    finally:
        _prepared.reset(token)


async def _one_at_a_time(svc: Service, envs: Sequence[Any]) -> None:
    for env in envs:
        async with svc.pool.acquire() as conn, conn.transaction():
            await gate_disclosure_request(env, conn, svc.deps)


async def _scenario(svc: Service) -> list[Any]:
    """Seven requests, with every way through the gate: made (twice), missing categories, no recipient key,
    erased at intake, no consent, and a re-sent request (same request id, new event)."""
    clients = [uuid.uuid4() for _ in range(6)]
    for c in clients[:2]:
        await svc.grant(c, recipients=[CARITAS], categories=["identity", "contact", "needs"])
    await svc.grant(clients[2], recipients=[CARITAS], categories=["identity"])
    await svc.grant(clients[3], recipients=[DIAKONIE], categories=["identity"])
    await svc.grant(clients[4], recipients=[CARITAS], categories=["identity"])
    svc.intake.erased.add(clients[4])
    first = disclosure_request(clients[0], categories=[ID, CONTACT])
    return [
        first,
        disclosure_request(clients[1], categories=[NEEDS]),
        disclosure_request(clients[2], categories=[ID, HEALTH]),
        disclosure_request(clients[3], to_org=DIAKONIE, categories=[ID]),
        disclosure_request(clients[4], categories=[ID]),
        disclosure_request(clients[5], categories=[ID]),
        disclosure_request(clients[0], categories=[ID, CONTACT], request_id=first.data.request_id),
    ]


async def _outcomes(svc: Service, envs: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Per request: what the disclosure ledger recorded, ids and times masked (they differ between two runs)."""
    out = []
    for env in dict.fromkeys(e.data.request_id for e in envs):
        r = await svc.pool.fetchrow("SELECT * FROM disclosures WHERE request_id = $1", env)
        reason = _TIME.sub("<time>", _UUID.sub("<id>", r["reason"]))
        out.append((r["outcome"], tuple(r["categories"]), tuple(r["missing_categories"]), reason, r["consent_id"] is not None))
    return out


async def _opened(svc: Service, envs: Sequence[Any], n: int) -> list[SealedContent]:
    """The sealed contents Caritas received for these requests' clients, in request order."""
    wanted = {str(e.data.client_id) for e in envs}
    recs = await read_topic(
        svc.bootstrap_servers,
        svc.topic(topics.partner_inbox(CARITAS)),
        until=lambda rs: len([r for r in rs if r.key.decode() in wanted]) >= n,
        settle=0.5,
    )
    by_client = {r.key.decode(): decode(r.headers, r.value) for r in recs if r.key.decode() in wanted}
    assert len(by_client) == n
    order = [str(e.data.client_id) for e in envs if str(e.data.client_id) in by_client]
    return [
        SealedContent.model_validate(unseal(by_client[c].data.sealed.jwe, [PRIVATE_KEYS[CARITAS]["enc"]])) for c in dict.fromkeys(order)
    ]


async def test_a_batch_makes_one_intake_request_and_decides_exactly_as_one_at_a_time(service: Service) -> None:
    batched, single = await _scenario(service), await _scenario(service)

    batch = await prepare_gate_batch(batched, service.deps)
    # One request to intake, for exactly the requests the pre-check lets through, with exactly their categories:
    # not the one lacking health, not the one for a recipient without a key, not the one without consent, and the
    # re-sent request once.
    assert service.intake.batches == [
        [
            DisclosureQuery(batched[0].data.client_id, (ID, CONTACT), batched[0].data.referral_id),
            DisclosureQuery(batched[1].data.client_id, (NEEDS,), batched[1].data.referral_id),
            DisclosureQuery(batched[4].data.client_id, (ID,), batched[4].data.referral_id),
        ]
    ]
    await _as_one_batch(service, batched, batch)
    assert service.intake.calls == []  # nothing fetched alone
    assert batch.prefetched == {}  # every prefetched content was taken by its handler

    await _one_at_a_time(service, single)
    assert len(service.intake.batches) == 1
    assert [c[0] for c in service.intake.calls] == [single[0].data.client_id, single[1].data.client_id, single[4].data.client_id]

    expected = [
        ("made", ("identity", "contact"), (), "granted: consent <id> covers caritas-paderborn for referral", True),
        ("made", ("needs",), (), "granted: consent <id> covers caritas-paderborn for referral", True),
        ("blocked", ("identity", "health"), ("health",), "missing-categories: consent <id> does not cover health", True),
        (
            "blocked",
            ("identity",),
            (),
            "no-recipient-key: diakonie-paderborn-hoexter has registered no active encryption key "
            "(network file or POST /v1/organisations/diakonie-paderborn-hoexter/keys)",
            True,
        ),
        ("blocked", ("identity",), ("identity",), "erased: intake has erased the client's data", False),
        ("blocked", ("identity",), ("identity",), "no-consent: no consent covers caritas-paderborn for referral", False),
    ]
    assert await _outcomes(service, batched) == await _outcomes(service, single) == expected
    assert await _opened(service, batched, 2) == await _opened(service, single, 2)
    [first, _] = await _opened(service, batched, 2)
    assert first.personal_data.categories() == [ID, CONTACT] and first.notes is not None
    # The re-sent request was decided once in either run: one inbox record and one `made` per client.
    made = "SELECT count(*) FROM outbox o WHERE o.event_type = 'lotse.disclosure.made' AND o.client_id = $1"
    for env in (batched[0], single[0]):
        assert await service.pool.fetchval("SELECT count(*) FROM disclosures WHERE client_id = $1", env.data.client_id) == 1
        assert await service.pool.fetchval(made, str(env.data.client_id)) in (0, 1)  # (0: the relay published it already)


async def test_a_consent_withdrawn_after_the_prepare_blocks_the_request_and_its_prefetched_data_is_dropped(service: Service) -> None:
    withdrawing, other = uuid.uuid4(), uuid.uuid4()
    consent = await service.grant(withdrawing, recipients=[CARITAS], categories=["identity", "contact"])
    await service.grant(other, recipients=[CARITAS], categories=["identity", "contact"])
    reqs = [disclosure_request(c, categories=[ID, CONTACT]) for c in (withdrawing, other)]
    batch = await prepare_gate_batch(reqs, service.deps)
    assert set(batch.prefetched) == {r.data.request_id for r in reqs}  # the pre-check passed, the contents are here
    # The client withdraws between the prepare and the batch's transaction.
    r = await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=JC)
    assert r.status_code == 200, r.text

    await _as_one_batch(service, reqs, batch)
    row = await service.pool.fetchrow("SELECT outcome, reason FROM disclosures WHERE request_id = $1", reqs[0].data.request_id)
    assert row["outcome"] == "blocked" and row["reason"].startswith("withdrawn"), row
    assert await service.pool.fetchval("SELECT outcome FROM disclosures WHERE request_id = $1", reqs[1].data.request_id) == "made"
    assert batch.prefetched == {}  # dropped, not kept for anything else
    # Caritas gets the other client's referral only; the withdrawn one's content was sealed for nobody.
    [opened] = await _opened(service, reqs, 1)
    assert opened.personal_data.categories() == [ID, CONTACT]
    assert await service.pool.fetchval("SELECT count(*) FROM disclosures WHERE client_id = $1 AND outcome = 'made'", withdrawing) == 0
    assert service.intake.calls == []


async def test_prefetched_content_is_sealed_only_when_it_is_exactly_what_the_handler_allows(service: Service) -> None:
    fits, differs = uuid.uuid4(), uuid.uuid4()
    for c in (fits, differs):
        await service.grant(c, recipients=[CARITAS], categories=["identity", "contact", "health"])
    reqs = [disclosure_request(fits, categories=[ID]), disclosure_request(differs, categories=[ID])]
    batch = await prepare_gate_batch(reqs, service.deps)
    assert len(service.intake.batches) == 1 and service.intake.calls == []
    # What intake holds changes after the prepare, so the sealed content shows which answer was used.
    renamed = full_personal_data().model_copy(update={"identity": Identity(given_name="Olena", family_name="Neu")})
    service.intake.data.update({fits: renamed, differs: renamed})
    # A prefetched answer that is not exactly this request's (more categories than its decision allows): not used.
    wrong = batch.prefetched[reqs[1].data.request_id]
    batch.prefetched[reqs[1].data.request_id] = Prefetched(replace(wrong.query, categories=(ID, HEALTH)), wrong.fetched)

    await _as_one_batch(service, reqs, batch)
    assert [c[0] for c in service.intake.calls] == [differs]  # fetched alone, as without a batch
    opened = dict(zip((str(fits), str(differs)), await _opened(service, reqs, 2), strict=True))
    assert opened[str(fits)].personal_data.identity.family_name == "Kovalenko"  # the prefetched answer
    assert opened[str(differs)].personal_data.identity.family_name == "Neu"  # its own fetch
    assert all(o.personal_data.categories() == [ID] for o in opened.values())


async def test_without_a_working_batch_request_the_gate_fetches_one_by_one(service: Service) -> None:
    service.intake.batch_down = True
    clients = [uuid.uuid4(), uuid.uuid4()]
    for c in clients:
        await service.grant(c, recipients=[CARITAS], categories=["identity"])
    reqs = [disclosure_request(c, categories=[ID]) for c in clients]
    batch = await prepare_gate_batch(reqs, service.deps)
    assert len(service.intake.batches) == 1 and batch.prefetched == {}  # it was asked, and failed
    await _as_one_batch(service, reqs, batch)
    assert service.intake.calls == [(r.data.client_id, (ID,), r.data.referral_id) for r in reqs]
    assert await _decided(service, [r.data.request_id for r in reqs], 2)
    assert await service.pool.fetchval("SELECT count(*) FROM disclosures WHERE outcome = 'made'") == 2


async def test_a_lone_request_is_left_to_its_handler(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, recipients=[CARITAS], categories=["identity"])
    request = disclosure_request(client, categories=[ID])
    batch = await prepare_gate_batch([request], service.deps)
    assert batch == GateBatch(frozenset(), {}) and service.intake.batches == []
    await _as_one_batch(service, [request], batch)
    assert service.intake.calls == [(client, (ID,), request.data.referral_id)]


async def test_through_the_consumer_each_request_is_fetched_once(service: Service) -> None:
    clients = [uuid.uuid4() for _ in range(8)]
    for c in clients:
        await service.grant(c, recipients=[CARITAS], categories=["identity"])
    reqs = [disclosure_request(c, categories=[ID]) for c in clients]
    await service.produce(topics.DISCLOSURE_REQUESTS, *reqs)
    ids = [r.data.request_id for r in reqs]
    await eventually(lambda: _decided(service, ids, len(ids)))
    assert await service.pool.fetchval("SELECT count(*) FROM disclosures WHERE outcome = 'made'") == len(reqs)
    # Each exactly once, in a batch or (a batch of one) alone.
    assert sorted(str(c) for c, _, _ in service.intake.fetched()) == sorted(str(c) for c in clients)


async def test_through_the_consumer_a_failing_prepare_or_batch_request_changes_nothing(service: Service, monkeypatch: Any) -> None:
    async def broken(*_: Any) -> Any:
        raise RuntimeError("the pre-check's query failed")

    service.intake.batch_down = True
    reqs = []
    for _ in range(3):
        c = uuid.uuid4()
        await service.grant(c, recipients=[CARITAS], categories=["identity"])
        reqs.append(disclosure_request(c, categories=[ID]))
    await service.produce(topics.DISCLOSURE_REQUESTS, *reqs[:2])
    await eventually(lambda: _decided(service, [r.data.request_id for r in reqs[:2]], 2))
    monkeypatch.setattr(repo, "gate_batch_state", broken)  # the prepare itself fails: the kit runs the batch without it
    await service.produce(topics.DISCLOSURE_REQUESTS, reqs[2])
    await eventually(lambda: _decided(service, [reqs[2].data.request_id], 1))
    assert await service.pool.fetchval("SELECT count(*) FROM disclosures WHERE outcome = 'made'") == 3
    assert sorted(str(c) for c, _, _ in service.intake.calls) == sorted(str(r.data.client_id) for r in reqs)


async def _decided(svc: Service, request_ids: list[uuid.UUID], n: int) -> bool:
    return bool(await svc.pool.fetchval("SELECT count(*) FROM disclosures WHERE request_id = ANY($1::uuid[])", request_ids) == n)
