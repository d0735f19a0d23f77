"""Bad input never breaks the consent service (issue 11), against the real broker and database."""

from __future__ import annotations

import uuid
from typing import Any

from tests.fixtures import as_org

from .conftest import JOBCENTER, Service, consent_body

JC = as_org(JOBCENTER)  # the collecting organisation of the consents these tests grant


def assert_refused(resp: Any, field: str) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == field and "control characters" in e["message"] for e in resp.json()["errors"]), resp.text


async def test_nul_in_the_reason_for_an_oral_consent_is_refused_naming_the_field(service: Service):
    body = consent_body(uuid.uuid4(), form="oral", form_reason="Telefonat,\x00 Dolmetscherin zugeschaltet")
    assert_refused(await service.http.post("/v1/consents", json=body, headers=as_org(JOBCENTER)), "form_reason")
    # Line breaks are text: the same reason written over two lines is recorded.
    body = consent_body(uuid.uuid4(), form="oral", form_reason="Telefonat,\r\nDolmetscherin zugeschaltet")
    resp = await service.http.post("/v1/consents", json=body, headers=as_org(JOBCENTER))
    assert resp.status_code == 201, resp.text
    assert resp.json()["form_reason"] == "Telefonat,\r\nDolmetscherin zugeschaltet"


async def test_a_control_character_in_the_token_subject_is_refused(service: Service):
    # The consent records who recorded it (the token's subject); a NUL there reached PostgreSQL.
    resp = await service.http.post("/v1/consents", json=consent_body(uuid.uuid4()), headers=as_org(JOBCENTER, subject="m.mueller\x00"))
    assert resp.status_code == 401 and resp.headers["content-type"] == "application/problem+json", resp.text


async def test_the_receipt_of_a_consent_informed_in_a_language_without_locale_data(service: Service):
    """Found by the stateful fuzzing: `information_language` is any well-formed tag, and one CLDR does not know
    ("zz") made every receipt of that consent fail while naming the language (Babel's UnknownLocaleError)."""
    consent = await service.grant(information_language="zz")
    for lang in (None, "de", "ar"):
        resp = await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": lang} if lang else None, headers=JC)
        assert resp.status_code == 200, resp.text
        assert "zz" in resp.json()["text"]  # the tag stands in for the name it does not have
