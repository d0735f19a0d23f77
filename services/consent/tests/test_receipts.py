"""Consent receipts in every listed language, and the completeness of their translations."""

from __future__ import annotations

import string
import uuid
import pytest

from services.consent.domain.model import ConsentStatus
from services.consent.domain.receipt_texts import SUPPORTED_LANGUAGES, TEXTS

from .conftest import Service

REQUIRED = {"de", "en", "uk", "ar", "ru", "tr", "fa"}


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_every_required_language_is_there() -> None:
    assert REQUIRED <= set(SUPPORTED_LANGUAGES) == set(TEXTS)


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_no_template_misses_a_key_or_placeholder(lang: str) -> None:
    reference = TEXTS["en"]
    texts = TEXTS[lang]
    assert set(texts) == set(reference), f"{lang}: missing {set(reference) - set(texts)}, extra {set(texts) - set(reference)}"
    for key, template in reference.items():
        assert texts[key].strip(), f"{lang}.{key} is empty"
        assert _placeholders(texts[key]) == _placeholders(template), f"{lang}.{key} placeholders differ from en"
        if lang != "en" and key not in ("form.electronic",):
            assert texts[key] != template, f"{lang}.{key} is untranslated English"


def test_every_vocabulary_value_has_a_label() -> None:
    from contracts.vocab import DataCategory, Purpose
    from services.consent.domain.model import ConsentForm

    wanted = {f"purpose.{p.value}" for p in Purpose} | {f"category.{c.value}" for c in DataCategory}
    wanted |= {f"form.{f.value}" for f in ConsentForm} | {f"status.{s.value}" for s in ConsentStatus}
    assert wanted <= set(TEXTS["en"])


async def test_receipt_in_every_language(service: Service) -> None:
    consent = await service.grant(categories=["identity", "contact", "health"], interpreter_used=True)
    cid = consent["consent_id"]
    for lang in sorted(REQUIRED):
        r = await service.http.get(f"/v1/consents/{cid}/receipt", params={"lang": lang})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["language"] == lang
        text = body["text"]
        t = TEXTS[lang]
        for key in ("title", "voluntary", "interpreter", "health"):
            assert t[key] in text
        for label in ("category.identity", "category.contact", "category.health", "purpose.referral", "status.active"):
            assert t[label] in text, (lang, label)
        assert cid in text and "Caritasverband Paderborn" in text and "GDPR Art. 9(2)(a)" in text
        assert "{" not in text  # every placeholder was filled
        record = body["record"]
        assert record["consent_id"] == cid and record["special_categories"] == ["health"]
        assert record["information_given"] == {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}


async def test_receipt_language_defaults_and_status(service: Service) -> None:
    consent = await service.grant(information_language="uk", categories=["identity"], interpreter_used=False)
    r = await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt")
    assert r.json()["language"] == "uk" and TEXTS["uk"]["interpreter"] not in r.json()["text"]
    assert TEXTS["uk"]["health"] not in r.json()["text"]
    other = await service.grant(information_language="ti")  # Tigrinya: no text yet, German is the fallback
    assert (await service.http.get(f"/v1/consents/{other['consent_id']}/receipt")).json()["language"] == "de"
    bad = await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": "xx"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "lang"

    await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers={"X-Lotse-Org": "ki-paderborn"})
    text = (await service.http.get(f"/v1/consents/{consent['consent_id']}/receipt", params={"lang": "de"})).json()["text"]
    assert "Stand: widerrufen." in text and "widerrufen" in text.split("\n")[3]
    assert (await service.http.get(f"/v1/consents/{uuid.uuid4()}/receipt")).status_code == 404
    service.clock.advance(days=400)
    text = (await service.http.get(f"/v1/consents/{other['consent_id']}/receipt", params={"lang": "en"})).json()["text"]
    assert "Status: expired." in text and "This consent expired on" in text
