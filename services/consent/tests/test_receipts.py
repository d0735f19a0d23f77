"""Consent receipts over HTTP in every language. (The catalogues themselves: test_i18n.py.)"""

from __future__ import annotations

import uuid

from contracts.vocab import DataCategory, Purpose
from lotse_kit.i18n import LANGUAGES
from services.consent.domain.model import ConsentStatus
from services.consent.domain.receipts import Section
from tests.fixtures import as_org

from .conftest import JOBCENTER, Service

JC = as_org(JOBCENTER)  # the collecting organisation of the consents these tests grant


async def test_receipt_in_every_language(service: Service) -> None:
    consent = await service.grant(categories=["identity", "contact", "health"], interpreter_used=True)
    cid = consent["consent_id"]
    texts = service.deps.receipt_texts
    for lang in LANGUAGES:
        r = await service.http.get(f"/v1/consents/{cid}/receipt", params={"lang": lang}, headers=JC)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["language"] == lang
        text = body["text"]
        for section in (Section.TITLE, Section.VOLUNTARY, Section.INTERPRETER, Section.HEALTH):
            assert texts.sentence(lang, section) in text, (lang, section)
        for label in (
            texts.category(lang, DataCategory.IDENTITY),
            texts.category(lang, DataCategory.CONTACT),
            texts.category(lang, DataCategory.HEALTH),
            texts.purpose(lang, Purpose.REFERRAL),
            texts.status(lang, ConsentStatus.ACTIVE),
        ):
            assert label in text, (lang, label)
        assert cid in text and "Caritasverband Paderborn" in text and "GDPR Art. 9(2)(a)" in text
        assert "%(" not in text and "{" not in text  # every placeholder was filled
        record = body["record"]
        assert record["consent_id"] == cid and record["special_categories"] == ["health"]
        assert record["information_given"] == {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}
        assert record["recipients"][0] == {"id": "caritas-paderborn", "name": "Caritasverband Paderborn"}


async def test_receipt_text_in_arabic_script_separates_items_with_the_arabic_semicolon(service: Service) -> None:
    consent = await service.grant(categories=["identity", "contact"])
    for lang, separator in (("ar", "؛ "), ("fa", "؛ "), ("de", "; ")):
        text = (await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": lang}, headers=JC)).json()["text"]
        texts = service.deps.receipt_texts
        labels = separator.join([texts.category(lang, DataCategory.IDENTITY), texts.category(lang, DataCategory.CONTACT)])
        assert labels in text, lang


async def test_receipt_language_defaults_and_status(service: Service) -> None:
    texts = service.deps.receipt_texts
    consent = await service.grant(information_language="uk", categories=["identity"], interpreter_used=False)
    r = await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", headers=JC)
    assert r.json()["language"] == "uk" and texts.sentence("uk", Section.INTERPRETER) not in r.json()["text"]
    assert texts.sentence("uk", Section.HEALTH) not in r.json()["text"]
    other = await service.grant(information_language="ti")  # Tigrinya: no text yet, German is the fallback
    assert (await service.http.get(f"/v1/consents/{other['consent_id']}/receipt", headers=JC)).json()["language"] == "de"
    bad = await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": "xx"}, headers=JC)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "lang"
    assert bad.headers["content-type"].startswith("application/problem+json")

    await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=as_org("ki-paderborn"))
    text = (await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": "de"}, headers=JC)).json()["text"]
    assert "Stand: widerrufen." in text and "widerrufen" in text.split("\n")[3]
    missing = await service.http.get(f"/v1/consents/{uuid.uuid4()}/receipt", headers=JC)
    assert missing.status_code == 404 and missing.json()["type"] == "urn:lotse:problem:consent-not-found"
    service.clock.advance(days=400)
    text = (await service.http.get(f"/v1/consents/{other['consent_id']}/receipt", params={"lang": "en"}, headers=JC)).json()["text"]
    assert "Status: expired." in text and "This consent expired on" in text
