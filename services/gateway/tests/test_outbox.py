"""Answers over HTTPS: checked as Lotse's partner-outbox consumers check them, idempotent by event id, and put
on `partner.<org>.outbox.v1` through the transactional outbox; bad input is a 4xx problem, never a 5xx."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from contracts import decode, new_event, topics
from contracts.events import ReferralAccepted, ReferralDeclined, WithdrawalAcknowledged
from contracts.structured import BATCH, STRUCTURED, structured_of
from tests.kafka_helpers import read_topic

from .conftest import AWO, CARITAS, partner

OUTBOX = "/v1/partners/awo-paderborn/outbox"


def accepted(org: str = AWO, **over: Any) -> dict[str, Any]:
    data = ReferralAccepted(client_id=uuid.uuid4(), referral_id=uuid.uuid4(), to_org=org, accepted_at=datetime.now(UTC))
    return structured_of(new_event(data, source=f"/partners/{org}")) | over


def post(gw, body: Any, ctype: str = STRUCTURED, org: str = AWO):
    return gw.http.post(f"/v1/partners/{org}/outbox", content=json.dumps(body).encode(), headers=partner(org) | {"content-type": ctype})


async def test_answers_land_on_the_partners_outbox_topic_once(start_gateway):
    one = accepted()
    declined = structured_of(
        new_event(
            ReferralDeclined(
                client_id=uuid.uuid4(), referral_id=uuid.uuid4(), to_org=AWO, reason="no_capacity", declined_at=datetime.now(UTC)
            ),
            source=f"/partners/{AWO}",
        )
    )
    ack = structured_of(
        new_event(
            WithdrawalAcknowledged(
                client_id=uuid.uuid4(), org=AWO, acknowledged_event_id=uuid.uuid4(), acknowledged_at=datetime.now(UTC), signature="a.b.c"
            ),
            source=f"/partners/{AWO}",
        )
    )
    async with start_gateway() as gw:
        r = await post(gw, one)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": [one["id"]]}
        r = await post(gw, [declined, ack, one], BATCH)  # the repeated one is accepted again, not written again
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": [declined["id"], ack["id"], one["id"]]}
        assert (await post(gw, one)).status_code == 202
        records = await read_topic(gw.bootstrap_servers, gw.topic(topics.partner_outbox(AWO)), until=3, settle=1.5)
        envs = [decode(r.headers, r.value) for r in records]
        assert sorted(str(e.id) for e in envs) == sorted([one["id"], declined["id"], ack["id"]])
        by_id = {str(e.id): e for e in envs}
        assert by_id[one["id"]].source == f"/partners/{AWO}" and by_id[one["id"]].data.to_org == AWO
        assert by_id[one["id"]].subject == one["subject"]  # key and subject: the client, so per-client order holds
        assert {r.key.decode() for r in records} == {one["subject"], declined["subject"], ack["subject"]}


async def test_bad_input_is_a_4xx_problem_and_nothing_is_written(start_gateway):
    good = accepted()
    bad_cases: list[tuple[str, Any, str, int]] = [
        ("not JSON", b"{nope", STRUCTURED, 422),
        ("a list as one event", [good], STRUCTURED, 422),
        ("one event as a batch", good, BATCH, 422),
        ("empty batch", [], BATCH, 422),
        ("wrong media type", good, "application/json", 415),
        ("no specversion", {k: v for k, v in good.items() if k != "specversion"}, STRUCTURED, 422),
        ("not a UUID id", good | {"id": "x"}, STRUCTURED, 422),
        ("another partner's source", good | {"source": f"/partners/{CARITAS}"}, STRUCTURED, 422),
        ("a service's source", good | {"source": "/lotse/intake"}, STRUCTURED, 422),
        ("answers for another organisation", accepted(CARITAS, source=f"/partners/{AWO}"), STRUCTURED, 422),
        ("a type partners may not post", good | {"type": "lotse.consent.granted", "dataschema": None}, STRUCTURED, 422),
        ("an unknown type", good | {"type": "lotse.nothing.happened"}, STRUCTURED, 422),
        ("an old or foreign dataschema", good | {"dataschema": "urn:lotse:schema:lotse.referral.sent.v1"}, STRUCTURED, 422),
        ("data that breaks the contract", good | {"data": {**good["data"], "accepted_at": "yesterday"}}, STRUCTURED, 422),
        ("no data", {k: v for k, v in good.items() if k != "data"}, STRUCTURED, 422),
        ("binary data", good | {"data_base64": "AAAA"}, STRUCTURED, 422),
        ("subject not the client", good | {"subject": str(uuid.uuid4())}, STRUCTURED, 422),
        ("an extension that is no string", good | {"traceparent": 5}, STRUCTURED, 422),
        ("a time without offset", good | {"time": "2026-01-01T10:00:00"}, STRUCTURED, 422),
        ("a batch with one bad event", [good, good | {"id": "x"}], BATCH, 422),
        ("the same id for two events", [good, accepted(id=good["id"])], BATCH, 409),
        ("JSON null", None, STRUCTURED, 422),
        ("a number", 5, BATCH, 422),
    ]
    async with start_gateway(batch_max=3) as gw:
        for name, body, ctype, status in bad_cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = await gw.http.post(OUTBOX, content=content, headers=partner(AWO) | {"content-type": ctype})
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", name
        r = await post(gw, [accepted() for _ in range(4)], BATCH)
        assert r.status_code == 422, r.text
        r = await gw.http.post(OUTBOX, content=b"x" * 2_000_000, headers=partner(AWO) | {"content-type": STRUCTURED})
        assert r.status_code == 413
        # An id used before for another event is refused.
        assert (await post(gw, good)).status_code == 202
        other = accepted(id=good["id"])
        r = await post(gw, other)
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        # Only the one good event reached the topic.
        records = await read_topic(gw.bootstrap_servers, gw.topic(topics.partner_outbox(AWO)), until=1, settle=1.5)
        assert [decode(r.headers, r.value).id for r in records] == [uuid.UUID(good["id"])]
