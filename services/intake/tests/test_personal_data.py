"""Issue 13 in intake: personal data encrypted at rest (per-client data keys, KEK rotation), the consent gate's
internal API, corrections, do_not_contact and erasure (GDPR Art. 16, 17), against the real broker and database."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from contracts import topics
from contracts.events import SealedContent
from contracts.vocab import DataCategory, Purpose
from lotse_kit import db
from lotse_kit.context import ON_BEHALF_OF
from lotse_kit.keyring import Keyring
from services.intake.adapters.vault import DataUnavailable, Vault
from services.intake.bootstrap import MIGRATIONS
from tests.fixtures import service_token
from tests.kafka_helpers import eventually, read_topic

from .conftest import CARITAS, JOBCENTER, KI, TEST_KEK_ID, client_body, events, fast_settings, h, metric

# Every personal value the tests write; none may appear in clear in any table of intake's schema.
NAMES = ("Olena", "Kovalenko")
PERSONAL = (*NAMES, "1988-04-12", "olena.kovalenko@mail.example", "5251 123456", "Diplom-Ingenieurin", "Diabetes Typ 1")
NOTES = ("Termin beim Jobcenter", "Bitte Dolmetscherin", "keine Kapazität bis Mai")
KEK_A = base64.b64encode(b"A" * 32).decode()
KEK_B = base64.b64encode(b"B" * 32).decode()
OLD_KEKS = "lotse_intake_data_keys_under_old_keks"


def consent_gate() -> dict[str, str]:
    return service_token("consent")


async def register(http, org: str = JOBCENTER, **over: Any) -> str:
    body = client_body(education_qualifications="Diplom-Ingenieurin (Kyjiw)", health="Diabetes Typ 1") | over
    resp = await http.post("/v1/clients", json=body, headers=h(org))
    assert resp.status_code == 201, resp.text
    return resp.json()["client_id"]


async def refer(http, client_id: str, consent, to_org: str = KI, categories: tuple[DataCategory, ...] = (DataCategory.IDENTITY,)) -> str:
    consent.grant(client_id, to_org, Purpose.REFERRAL, categories)
    body = {"to_org": to_org, "service": "sprachmittlerpool" if to_org == KI else "mbe", "categories": [c.value for c in categories]}
    body |= {"reason": NOTES[0], "free_text": NOTES[1] + " für Olena"}
    resp = await http.post(f"/v1/clients/{client_id}/referrals", headers=h(JOBCENTER), json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["referral_id"]


async def fetch(http, client_id: str, *categories: str, referral_id: str | None = None, headers: dict[str, str] | None = None):
    params = [("category", c) for c in categories] + ([("referral_id", referral_id)] if referral_id else [])
    return await http.get(
        f"/internal/v1/clients/{client_id}/disclosure", params=params, headers=consent_gate() if headers is None else headers
    )


async def clear_text_in(conn: asyncpg.Connection | asyncpg.Pool, needles: tuple[str, ...]) -> list[str]:
    """Every (table, needle) where a value of any column of any table of the schema holds a needle in clear
    (bytea decoded as UTF-8 as far as it goes, so that a clear value in a byte column is found too)."""
    found = []
    tables = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    )
    for t in tables:
        for row in await conn.fetch(f'SELECT * FROM "{t["table_name"]}"'):
            for value in row.values():
                text = bytes(value).decode("utf-8", "ignore") if isinstance(value, bytes | memoryview) else str(value)
                found += [f"{t['table_name']}: {n}" for n in needles if n in text]
    return sorted(set(found))


def problem(resp, status: int, type_: str) -> dict[str, Any]:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}"
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == type_, body
    return body


# ------------------------------------------------------------------ encryption at rest
async def test_no_table_holds_personal_data_in_clear_and_ciphertexts_are_bound_to_client_and_column(make_intake, consent):
    async with make_intake() as (app, http):
        client_id = await register(http)
        rid = await refer(http, client_id, consent)
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "other", "reason_text": NOTES[2]})
        assert resp.status_code == 200, resp.text
        pool = app.state.runtime.db.pool
        # (The outbox holds events until the relay published them; the decline's reason_text is a field of
        # lotse.referral.declined on a shared topic by contract, so wait for the relay before looking.)
        await eventually(lambda: _outbox_empty(pool))
        assert await clear_text_in(pool, (*PERSONAL, *NOTES)) == []
        # ... yet everything reads back for those who may see it.
        case = (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).json()
        assert (case["given_name"], case["date_of_birth"], case["health"]) == ("Olena", "1988-04-12", "Diabetes Typ 1")
        ref = (await http.get(f"/v1/referrals/{rid}", headers=h(JOBCENTER))).json()
        assert (ref["reason"], ref["decline_text"]) == (NOTES[0], NOTES[2])
        # One data key per client, wrapped under the configured KEK (only its id is stored in clear).
        key = await pool.fetchrow("SELECT * FROM client_keys WHERE client_id = $1", uuid.UUID(client_id))
        assert key["kek_id"] == TEST_KEK_ID and len(key["wrapped_key"]) == 32 + 16
        # A ciphertext moved to another column, or another client's row, does not open.
        other = await register(http, given_name="Xenia")
        async with pool.acquire() as conn:
            vault: Vault = app.state.deps.vault
            cid, oid = uuid.UUID(client_id), uuid.UUID(other)
            await conn.execute("UPDATE client_personal_data SET family_name_enc = given_name_enc WHERE client_id = $1", oid)
            with pytest.raises(DataUnavailable, match="family_name"):
                await vault.personal(conn, oid)
            await conn.execute(
                "UPDATE client_personal_data SET given_name_enc = (SELECT given_name_enc FROM client_personal_data WHERE client_id = $1),"
                " family_name_enc = (SELECT family_name_enc FROM client_personal_data WHERE client_id = $1) WHERE client_id = $2",
                cid,
                oid,
            )
            with pytest.raises(DataUnavailable, match="given_name"):
                await vault.personal(conn, oid)
            assert (await vault.personal(conn, cid))["given_name"] == "Olena"


async def test_kek_rotation_rewraps_data_keys_and_never_touches_the_data(make_intake, consent, database_url, unique):
    kek_a = {"kek": KEK_A, "kek_id": "kek-a"}
    kek_b = {"kek": KEK_B, "kek_id": "kek-b"}
    async with make_intake("r", **kek_a) as (app, http):
        first = await register(http)
        rid = await refer(http, first, consent)
        pool = app.state.runtime.db.pool
        ciphertexts = await pool.fetchrow("SELECT * FROM client_personal_data WHERE client_id = $1", uuid.UUID(first))

    # Rotated configuration, before any job ran: a keyring with the new KEK and the old one still opens the data.
    async with schema_connection(database_url, f"intake_{unique}r") as conn:
        rotated = Vault(Keyring.of("kek-b", base64.b64decode(KEK_B), {"kek-a": base64.b64decode(KEK_A)}), app.state.deps.clock)
        assert (await rotated.personal(conn, uuid.UUID(first)))["family_name"] == "Kovalenko"
        assert (await rotated.notes(conn, uuid.UUID(first), uuid.UUID(rid)))["reason"] == NOTES[0]
        # Without the old KEK it does not open.
        with pytest.raises(DataUnavailable, match="kek-a"):
            await Vault(Keyring.of("kek-b", base64.b64decode(KEK_B)), app.state.deps.clock).personal(conn, uuid.UUID(first))

    # The old KEK forgotten in the configuration: the gauge shows the key left under it, and nothing is re-wrapped.
    async with make_intake("r", **kek_b) as (app, http):
        await eventually(lambda: _gauge_is(http, 1))
        assert await app.state.runtime.db.pool.fetchval("SELECT kek_id FROM client_keys") == "kek-a"

    # Rotation done right: new KEK current, the old one listed. Old data reads, new data uses the new KEK,
    # the job moves every data key to it, and the data itself stays byte for byte what it was.
    async with make_intake("r", **kek_b, old_keks={"kek-a": KEK_A}) as (app, http):
        pool = app.state.runtime.db.pool
        assert (await http.get(f"/v1/clients/{first}", headers=h(JOBCENTER))).json()["family_name"] == "Kovalenko"
        second = await register(http, given_name="Xenia")
        assert await pool.fetchval("SELECT kek_id FROM client_keys WHERE client_id = $1", uuid.UUID(second)) == "kek-b"
        await eventually(lambda: _gauge_is(http, 0))
        assert {r["kek_id"] for r in await pool.fetch("SELECT kek_id FROM client_keys")} == {"kek-b"}
        assert await pool.fetchrow("SELECT * FROM client_personal_data WHERE client_id = $1", uuid.UUID(first)) == ciphertexts

    # The old KEK removed: everything still reads.
    async with make_intake("r", **kek_b) as (app, http):
        assert (await http.get(f"/v1/clients/{first}", headers=h(JOBCENTER))).json()["health"] == "Diabetes Typ 1"
        assert (await http.get(f"/v1/clients/{second}", headers=h(JOBCENTER))).json()["given_name"] == "Xenia"
        assert (await http.get(f"/v1/referrals/{rid}", headers=h(JOBCENTER))).json()["free_text"] == NOTES[1] + " für Olena"
        assert await metric(http, OLD_KEKS) == 0


async def _outbox_empty(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def _gauge_is(http, value: float) -> bool:
    return await metric(http, OLD_KEKS) == value


@asynccontextmanager
async def schema_connection(dsn: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection with the provisioning DSN to one intake schema (as an operator or a migration would have)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        yield conn
    finally:
        await conn.close()


async def test_clear_text_from_before_encryption_is_encrypted_at_start_and_the_clear_columns_dropped(make_intake, unique, database_url):
    schema = f"intake_{unique}legacy"
    kit = db.load_migrations("kit", db.KIT_MIGRATIONS)
    first = [m for m in db.load_migrations("intake", MIGRATIONS) if m.version == "intake:001_intake"]
    role = f"lotse_{schema}"
    await db.provision(
        database_url,
        schema=schema,
        role=role,
        password=fast_settings("unused.").db_role_password.get_secret_value(),
        migrations=kit + first,
    )
    cid, rid = uuid.uuid4(), uuid.uuid4()
    async with schema_connection(database_url, schema) as conn:
        await conn.execute(
            """INSERT INTO clients (client_id, registering_org, responsible_org, preferred_language, languages, needs,
                                    registered_at, updated_at) VALUES ($1, $2, $2, 'uk', '{uk}', '{interpreter}', now(), now())""",
            cid,
            JOBCENTER,
        )
        await conn.execute(
            """INSERT INTO client_personal_data (client_id, given_name, family_name, date_of_birth, email, health)
               VALUES ($1, 'Olena', 'Kovalenko', '1988-04-12', 'olena.kovalenko@mail.example', 'Diabetes Typ 1')""",
            cid,
        )
        await conn.execute(
            """INSERT INTO referrals (referral_id, client_id, from_org, to_org, service, requested_categories, status,
                                      disclosure_request_id, sent_at, updated_at)
               VALUES ($1, $2, $3, $4, 'sprachmittlerpool', '{identity}', 'sent', $1, now(), now())""",
            rid,
            cid,
            JOBCENTER,
            KI,
        )
        await conn.execute("INSERT INTO referral_notes (referral_id, reason) VALUES ($1, $2)", rid, NOTES[0])
        assert await clear_text_in(conn, PERSONAL) != []  # the starting point: clear text

    async with make_intake("legacy") as (app, http):
        pool = app.state.runtime.db.pool
        assert await clear_text_in(pool, (*PERSONAL, *NOTES)) == []
        columns = {
            r["column_name"]
            for r in await pool.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name IN ('client_personal_data', 'referral_notes')"
            )
        }
        assert not columns & {"given_name", "family_name", "date_of_birth", "email", "phone", "health", "reason", "free_text"}
        case = (await http.get(f"/v1/clients/{cid}", headers=h(JOBCENTER))).json()
        assert (case["given_name"], case["date_of_birth"], case["email"], case["phone"]) == (
            "Olena",
            "1988-04-12",
            "olena.kovalenko@mail.example",
            None,
        )
        assert (await http.get(f"/v1/referrals/{rid}", headers=h(JOBCENTER))).json()["reason"] == NOTES[0]
    # A second start finds nothing left to do.
    async with make_intake("legacy") as (_app, http):
        assert (await http.get(f"/v1/clients/{cid}", headers=h(JOBCENTER))).json()["family_name"] == "Kovalenko"


# ------------------------------------------------------------------ the consent gate's internal API
async def test_the_internal_api_hands_the_consent_gate_exactly_the_requested_categories_and_the_referrals_notes(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        rid = await refer(http, client_id, consent)
        resp = await fetch(http, client_id, "identity", "health", referral_id=rid)
        assert resp.status_code == 200, resp.text
        content = SealedContent.model_validate(resp.json())
        assert content.personal_data.categories() == [DataCategory.IDENTITY, DataCategory.HEALTH]
        assert content.personal_data.identity.given_name == "Olena" and content.personal_data.health == "Diabetes Typ 1"
        assert "olena.kovalenko" not in resp.text and "Diplom" not in resp.text  # not asked for, not given
        assert content.notes.reason == NOTES[0] and content.do_not_contact is False
        # Without a referral: no notes. Contact: e-mail, phone, languages.
        content = SealedContent.model_validate((await fetch(http, client_id, "contact")).json())
        assert content.notes is None and content.personal_data.categories() == [DataCategory.CONTACT]
        assert content.personal_data.contact.email == "olena.kovalenko@mail.example" and content.personal_data.contact.languages == [
            "uk",
            "ru",
            "de",
        ]
        # A referral of another client, an unknown referral or client: 404; no category: 422.
        other = await register(http, given_name="Xenia")
        problem(await fetch(http, other, "identity", referral_id=rid), 404, "urn:lotse:problem:not-found")
        problem(await fetch(http, client_id, "identity", referral_id=str(uuid.uuid4())), 404, "urn:lotse:problem:not-found")
        problem(await fetch(http, str(uuid.uuid4()), "identity"), 404, "urn:lotse:problem:not-found")
        problem(await fetch(http, client_id), 422, "urn:lotse:problem:validation")
        # Nobody but the consent service: no token 401; people, partner systems and the other services 403.
        assert (await fetch(http, client_id, "identity", headers={})).status_code == 401
        for who in (
            h(JOBCENTER),
            h(KI),
            service_token("notifications") | {ON_BEHALF_OF: JOBCENTER},
            service_token("intake"),
            service_token("audit"),
        ):
            body = problem(await fetch(http, client_id, "identity", headers=who), 403, "urn:lotse:problem:role-required")
            assert "Olena" not in str(body)


# ------------------------------------------------------------------ corrections and do_not_contact
async def test_corrections_name_the_changed_categories_and_do_not_contact_stops_the_contact_lookup(
    make_intake, consent, kafka_bootstrap, topic_namespace
):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        consent.grant(client_id, KI, Purpose.CONTACT_FOR_NOTIFICATIONS, [DataCategory.CONTACT])
        # (body, the fields that changed, the categories corrected)
        patches = [
            ({"given_name": "Olha", "email": "olha@mail.example"}, ["email", "given_name"], ["identity", "contact"]),
            (
                {"family_name": "Koval", "date_of_birth": "1988-04-13", "health": None},
                ["date_of_birth", "family_name", "health"],
                ["identity", "health"],
            ),
            (
                {"education_qualifications": "Meisterin", "needs": ["job_placement"]},
                ["education_qualifications", "needs"],
                ["needs", "education_qualifications"],
            ),
            ({"legal_regime": "sgb_ii"}, ["legal_regime"], None),  # no category: nothing a recipient received
            ({"given_name": "Olha"}, [], None),  # unchanged: nothing at all
            ({"do_not_contact": True}, ["do_not_contact"], ["contact"]),
        ]
        for body, changed, _ in patches:
            resp = await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json=body)
            assert resp.status_code == 200, resp.text
            assert resp.json()["changed"] == changed, (body, resp.json())
        evs = await events(
            kafka_bootstrap,
            topic_namespace + topics.CLIENTS,
            until=lambda es: sum(e.type == "lotse.client.corrected" for e in es) >= 4,
            settle=1.0,
        )
        corrections = [e for e in evs if e.type == "lotse.client.corrected"]
        assert [[c.value for c in e.data.categories] for e in corrections] == [p[2] for p in patches if p[2]]
        assert all(e.data.corrected_by_org == JOBCENTER and e.acting_org == JOBCENTER for e in corrections)
        raw = " ".join(r.value.decode() for r in await read_topic(kafka_bootstrap, topic_namespace + topics.CLIENTS))
        for value in ("Olha", "Koval", "olha@mail.example", "1988-04-13", "Meisterin"):
            assert value not in raw, value
        case = (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).json()
        assert (case["given_name"], case["family_name"], case["date_of_birth"], case["health"], case["do_not_contact"]) == (
            "Olha",
            "Koval",
            "1988-04-13",
            None,
            True,
        )
        # The contact lookup refuses, with its own problem type; the consent gate sees the flag with the contact data.
        notifications = service_token("notifications") | {ON_BEHALF_OF: KI}
        body = problem(await http.get(f"/v1/clients/{client_id}/contact", headers=notifications), 409, "urn:lotse:problem:do-not-contact")
        assert body["client_id"] == client_id and "olha" not in str(body)
        assert (await fetch(http, client_id, "contact")).json()["do_not_contact"] is True
        resp = await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json={"do_not_contact": False})
        assert resp.json()["changed"] == ["do_not_contact"]
        assert (await http.get(f"/v1/clients/{client_id}/contact", headers=notifications)).json()["email"] == "olha@mail.example"
        # Names cannot be cleared, the flag cannot be null; only the responsible organisation corrects.
        for bad in ({"given_name": None}, {"family_name": ""}, {"do_not_contact": None}, {"date_of_birth": "2999-01-01"}):
            resp = await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json=bad)
            assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == next(iter(bad)), (bad, resp.text)
        assert (await http.patch(f"/v1/clients/{client_id}", headers=h(CARITAS), json={"do_not_contact": True})).status_code == 404


# ------------------------------------------------------------------ erasure
async def test_erasure_destroys_the_data_key_and_every_ciphertext_and_is_idempotent(make_intake, consent, kafka_bootstrap, topic_namespace):
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        rid = await refer(http, client_id, consent)
        consent.grant(client_id, KI, Purpose.CONTACT_FOR_NOTIFICATIONS, [DataCategory.CONTACT])
        resp = await http.post(
            f"/v1/clients/{client_id}/deadlines",
            headers=h(JOBCENTER),
            json={"kind": "integration_course_eligibility", "due_date": "2026-06-01"},
        )
        assert resp.status_code == 201, resp.text
        await http.post(
            f"/v1/deadlines/{resp.json()['deadline_id']}/resolve", headers=h(JOBCENTER), json={"resolution": "Frau K. informiert"}
        )
        keep = await register(http, given_name="Xenia")  # another client: untouched
        erased_before = await metric(http, "lotse_intake_erasures_total", outcome="erased")

        # Only the responsible organisation erases: the receiver of a referral 403, anyone else 404.
        problem(await http.delete(f"/v1/clients/{client_id}", headers=h(KI)), 403, "urn:lotse:problem:forbidden")
        problem(await http.delete(f"/v1/clients/{client_id}", headers=h(CARITAS)), 404, "urn:lotse:problem:not-found")
        resp = await http.delete(f"/v1/clients/{client_id}", headers=h(JOBCENTER))
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["erased"] is True and answer["erased_by_org"] == JOBCENTER and answer["client_id"] == client_id

        pool = app.state.runtime.db.pool
        assert await pool.fetchval("SELECT count(*) FROM client_keys WHERE client_id = $1", cid) == 0
        assert await pool.fetchval("SELECT count(*) FROM client_personal_data WHERE client_id = $1", cid) == 0
        assert await pool.fetchval("SELECT count(*) FROM referral_notes WHERE referral_id = $1", uuid.UUID(rid)) == 0
        skeleton = await pool.fetchrow("SELECT * FROM clients WHERE client_id = $1", cid)
        assert skeleton["erased_at"] is not None and skeleton["erased_by_org"] == JOBCENTER and skeleton["needs"] == []
        assert await pool.fetchval("SELECT count(*) FROM deadlines WHERE client_id = $1 AND status = 'open'", cid) == 0
        await eventually(lambda: _outbox_empty(pool))  # the relay has published what the erasure wrote
        assert await clear_text_in(pool, (*PERSONAL, *NOTES, "Frau K. informiert")) == []
        assert await pool.fetchval("SELECT count(*) FROM client_keys WHERE client_id = $1", uuid.UUID(keep)) == 1

        # lotse.client.erased went out in the same transaction, once; open deadlines were resolved.
        evs = await events(
            kafka_bootstrap, topic_namespace + topics.CLIENTS, until=lambda es: any(e.type == "lotse.client.erased" for e in es)
        )
        [erased] = [e for e in evs if e.type == "lotse.client.erased"]
        assert erased.subject == client_id and erased.data.requested_by_org == JOBCENTER and erased.acting_org == JOBCENTER
        dls = await events(
            kafka_bootstrap,
            topic_namespace + topics.DEADLINES,
            until=lambda es: sum(e.type == "lotse.deadline.resolved" and e.data.resolution == "client erased" for e in es) >= 2,
        )
        assert {e.data.kind.value for e in dls if e.type == "lotse.deadline.resolved" and e.data.resolution == "client erased"} == {
            "residence_title_expiry",
            "referral_answer_due",
        }

        # Nothing readable of the client on any topic intake writes, before or after the erasure.
        for topic in (topics.CLIENTS, topics.REFERRALS, topics.DEADLINES, topics.DISCLOSURE_REQUESTS):
            raw = " ".join(r.value.decode() for r in await read_topic(kafka_bootstrap, topic_namespace + topic))
            assert not [p for p in (*PERSONAL, *NOTES) if p in raw], topic

        # Asked again: the same answer, nothing emitted.
        again = await http.delete(f"/v1/clients/{client_id}", headers=h(JOBCENTER))
        assert again.status_code == 200 and again.json() == answer
        assert await metric(http, "lotse_intake_erasures_total", outcome="erased") == erased_before + 1
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'lotse.client.erased'") == 0  # relayed, none new
        evs = await events(kafka_bootstrap, topic_namespace + topics.CLIENTS, until=lambda es: False, settle=0, timeout_s=2)
        assert sum(e.type == "lotse.client.erased" for e in evs) == 1

        # Every route that would show or change personal data: 410 (for those who see the client; others still 404).
        gone = "urn:lotse:problem:client-erased"
        for who in (JOBCENTER, KI):
            body = problem(await http.get(f"/v1/clients/{client_id}", headers=h(who)), 410, gone)
            assert body["erased_at"] and "Olena" not in str(body)
        problem(await http.get(f"/v1/clients/{client_id}", headers=h(CARITAS)), 404, "urn:lotse:problem:not-found")
        problem(await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json={"given_name": "Olena"}), 410, gone)
        problem(await http.post(f"/v1/clients/{client_id}/handover", headers=h(JOBCENTER), json={"to_org": KI}), 410, gone)
        problem(
            await http.post(
                f"/v1/clients/{client_id}/referrals",
                headers=h(JOBCENTER),
                json={"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"]},
            ),
            410,
            gone,
        )
        problem(
            await http.post(
                f"/v1/clients/{client_id}/deadlines",
                headers=h(JOBCENTER),
                json={"kind": "appointment", "due_at": "2026-04-01T10:00:00+02:00"},
            ),
            410,
            gone,
        )
        notifications = service_token("notifications") | {ON_BEHALF_OF: KI}
        problem(await http.get(f"/v1/clients/{client_id}/contact", headers=notifications), 410, gone)
        problem(await fetch(http, client_id, "identity", referral_id=rid), 410, gone)
        # The referral's pseudonymous record stays for both parties; its notes are gone, also those a later answer brings.
        ref = (await http.get(f"/v1/referrals/{rid}", headers=h(JOBCENTER))).json()
        assert ref["status"] == "sent" and ref["reason"] is None and ref["free_text"] is None
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "other", "reason_text": "Olena verzogen"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "declined" and resp.json()["decline_reason"] == "other"
        assert await pool.fetchval("SELECT count(*) FROM client_keys WHERE client_id = $1", cid) == 0
        assert await clear_text_in(pool, ("Olena verzogen",)) == []  # not in the outbox either: the event carries no text
        # The other client is untouched.
        assert (await http.get(f"/v1/clients/{keep}", headers=h(JOBCENTER))).json()["given_name"] == "Xenia"


async def test_a_running_retention_period_delays_erasure_and_says_until_when(make_intake, clock):
    async with make_intake(retention_days={"health": 30, "education_qualifications": 10, "identity": 0}) as (app, http):
        with_health = await register(http)
        without = await register(http, health=None, education_qualifications=None)
        registered = clock.now().astimezone(UTC)  # periods are counted in days of 24 hours
        body = problem(await http.delete(f"/v1/clients/{with_health}", headers=h(JOBCENTER)), 409, "urn:lotse:problem:retention-period")
        assert datetime.fromisoformat(body["retained_until"]) == registered + timedelta(days=30)
        assert {c: datetime.fromisoformat(t) for c, t in body["retained_categories"].items()} == {
            "education_qualifications": registered + timedelta(days=10),
            "health": registered + timedelta(days=30),
        }
        assert "2026-04-01" in body["detail"] and "health" in body["detail"]
        # Nothing was erased or emitted.
        assert (await http.get(f"/v1/clients/{with_health}", headers=h(JOBCENTER))).json()["health"] == "Diabetes Typ 1"
        assert await app.state.runtime.db.pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'lotse.client.erased'") == 0
        # A client without data in a retained category can be erased at once.
        assert (await http.delete(f"/v1/clients/{without}", headers=h(JOBCENTER))).status_code == 200
        # Activity on the case restarts the period (counted from the last activity).
        clock.advance(timedelta(days=20))
        assert (await http.patch(f"/v1/clients/{with_health}", headers=h(JOBCENTER), json={"needs": ["housing"]})).status_code == 200
        clock.advance(timedelta(days=15))  # 35 days after registration, 15 after the last activity
        body = problem(await http.delete(f"/v1/clients/{with_health}", headers=h(JOBCENTER)), 409, "urn:lotse:problem:retention-period")
        assert datetime.fromisoformat(body["retained_until"]) == registered + timedelta(days=50)
        clock.advance(timedelta(days=16))
        resp = await http.delete(f"/v1/clients/{with_health}", headers=h(JOBCENTER))
        assert resp.status_code == 200, resp.text
        problem(await http.get(f"/v1/clients/{with_health}", headers=h(JOBCENTER)), 410, "urn:lotse:problem:client-erased")
