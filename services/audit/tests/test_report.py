"""The GDPR Art. 15 subject report: JSON and a readable document in the client's language."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from markupsafe import escape

from contracts import new_event, topics
from contracts.events import (
    ClientRegistered,
    ConsentGranted,
    ConsentWithdrawn,
    DisclosureBlocked,
    DisclosureMade,
    ReferralAccepted,
    ReferralSent,
)
from services.audit.adapters.report_document import CATALOGUE, category_label
from services.audit.domain.report import build_report
from services.audit.domain.tree_head import epoch_ms
from services.audit.tests.conftest import AUDITOR, CLOCK_START, DPO, ORG, PARTNER, now, partner_referral

OTHER = "awo-paderborn"


def ev(data, source="/lotse/consent"):
    return new_event(data, source=source, acting_org=ORG)


def registered_entry(client_id: str, *languages: str) -> dict:
    data = {"client_id": client_id, "preferred_language": languages[0], "languages": list(languages[1:])}
    return {"client_id": client_id, "topic": topics.CLIENTS, "kind": "event", "ce": {"type": "lotse.client.registered"}, "data": data}


@pytest.mark.parametrize(
    ("requested", "client_languages", "expected"),
    [
        ("uk-UA", ("de",), "uk"),  # the requested language wins (region subtags ignored)
        (None, ("ar", "fa"), "ar"),  # else the client's preferred language
        ("fr", ("ti", "fa"), "fa"),  # unsupported ones are skipped, the client's other languages count
        ("fr", ("ti",), "en"),  # none supported: the kit's fallback
    ],
)
def test_report_language_is_chosen_with_the_kit_policy(requested, client_languages, expected):
    client = str(uuid.uuid4())
    report = build_report(
        client, [(0, registered_entry(client, *client_languages), True)], head=None, language=requested, generated_at=CLOCK_START
    )
    assert report.language == expected


async def test_subject_report_shows_who_received_what_under_which_consent(audit):
    client, stranger = uuid.uuid4(), uuid.uuid4()
    consent_a, consent_b = uuid.uuid4(), uuid.uuid4()
    t = now()
    await audit.produce(
        topics.CLIENTS,
        ev(
            ClientRegistered(
                client_id=client, registering_org=ORG, responsible_org=ORG, preferred_language="uk", languages=["uk", "ru"], registered_at=t
            ),
            "/lotse/intake",
        ),
        ev(
            ClientRegistered(client_id=stranger, registering_org=ORG, responsible_org=ORG, preferred_language="de", registered_at=t),
            "/lotse/intake",
        ),
    )
    await audit.produce(
        topics.CONSENTS,
        ev(
            ConsentGranted(
                client_id=client,
                consent_id=consent_a,
                collecting_org=ORG,
                recipients=[PARTNER],
                purposes=["referral"],
                categories=["identity", "contact", "needs"],
                legal_basis=["GDPR Art. 6(1)(a)"],
                form="paper",
                information_language="uk",
                granted_at=t,
                valid_until=t + timedelta(days=365),
            )
        ),
        ev(
            ConsentGranted(
                client_id=client,
                consent_id=consent_b,
                collecting_org=ORG,
                recipients=[OTHER],
                purposes=["contact_for_notifications"],
                categories=["contact"],
                legal_basis=["GDPR Art. 6(1)(a)"],
                form="paper",
                information_language="uk",
                granted_at=t,
            )
        ),
    )
    await audit.produce(
        topics.DISCLOSURES,
        ev(
            DisclosureMade(
                client_id=client,
                request_id=uuid.uuid4(),
                recipient=PARTNER,
                purpose="referral",
                categories=["identity", "contact"],
                consent_id=consent_a,
                payload_sha256="a" * 64,
                disclosed_at=t,
            )
        ),
        ev(
            DisclosureBlocked(
                client_id=client,
                request_id=uuid.uuid4(),
                recipient=OTHER,
                purpose="referral",
                categories=["identity", "health"],
                reason="no consent",
                missing_categories=["identity", "health"],
                blocked_at=t,
            )
        ),
    )
    await audit.produce(topics.partner_inbox(PARTNER), partner_referral(client, consent_a, date_of_birth=date(1990, 4, 12)))
    referral_id = uuid.uuid4()
    await audit.produce(
        topics.REFERRALS,
        ev(
            ReferralSent(client_id=client, referral_id=referral_id, from_org=ORG, to_org=PARTNER, service="migrationsberatung", sent_at=t),
            "/lotse/intake",
        ),
        ev(ReferralAccepted(client_id=client, referral_id=referral_id, to_org=PARTNER, accepted_at=t), "/lotse/intake"),
    )
    await audit.wait_for_size(9)
    # Withdrawn after the disclosure, and logged after the first tree head: only a later head covers it.
    await audit.sign()
    await audit.produce(topics.CONSENTS, ev(ConsentWithdrawn(client_id=client, consent_id=consent_b, withdrawn_at=t, disclosed_to=[])))
    await audit.wait_for_size(10)
    before = (await audit.http.get(f"/v1/audit/subjects/{client}/report", headers=DPO)).json()
    assert {c["consent_id"]: c["status"] for c in before["consents"]} == {str(consent_a): "active", str(consent_b): "active"}
    audit.clock.advance(minutes=5)
    head = await audit.sign()
    assert head["timestamp"] == epoch_ms(CLOCK_START) + 5 * 60 * 1000  # dated by the service's clock

    r = await audit.http.get(f"/v1/audit/subjects/{client}/report", headers=DPO)
    assert r.status_code == 200 and r.headers["content-language"] == "uk"
    report = r.json()
    assert report["generated_at"] == "2026-03-02T09:35:15Z"
    assert report["client_id"] == str(client) and report["language"] == "uk"
    assert report["tree_head"]["tree_size"] == head["tree_size"] == 10
    assert report["tampered_entries"] == [] and report["entries_examined"] == 9  # the stranger's entry is not examined
    consents = {c["consent_id"]: c for c in report["consents"]}
    assert consents[str(consent_a)]["status"] == "active" and consents[str(consent_a)]["recipients"] == [PARTNER]
    assert consents[str(consent_b)]["status"] == "withdrawn" and consents[str(consent_b)]["withdrawn_at"]
    [made] = report["disclosures"]
    assert (made["recipient"], made["categories"], made["consent_id"], made["purpose"]) == (
        PARTNER,
        ["identity", "contact"],
        str(consent_a),
        "referral",
    )
    [delivery] = report["deliveries"]
    assert (delivery["recipient"], delivery["categories"]) == (PARTNER, ["contact", "identity"])
    [blocked] = report["blocked"]
    assert blocked["recipient"] == OTHER and blocked["missing_categories"] == ["identity", "health"]
    [ref] = report["referrals"]
    assert (ref["to_org"], ref["status"]) == (PARTNER, "accepted") and len(ref["log_entries"]) == 2
    assert report["organisations"] == [PARTNER]
    # Every item names entries of this client that exist in the log.
    for idx in [made["log_entry"], delivery["log_entry"], blocked["log_entry"], *ref["log_entries"]]:
        entry = (await audit.http.get(f"/v1/audit/entries/{idx}", headers=AUDITOR)).json()
        assert entry["entry"]["client_id"] == str(client)
    text = r.text
    for personal in ("Olena", "Kovalenko", "olena.kovalenko", "1990-04-12"):
        assert personal not in text

    html = await audit.http.get(f"/v1/audit/subjects/{client}/report", params={"format": "html"}, headers=DPO)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    page = html.text
    assert 'lang="uk" dir="ltr"' in page and CATALOGUE.gettext("uk", "Your data protection report (Art. 15 GDPR)") in page
    assert "Caritasverband Paderborn" in page  # organisation names from the network configuration
    assert str(escape(category_label("uk", "identity"))) in page and "відкликана" in page
    assert "Ваш звіт про захист даних" in page  # the Ukrainian catalogue, not a fallback
    # "Created on": the service's clock, in the client's locale and the network's time zone
    created = format_datetime(CLOCK_START + timedelta(minutes=5), "medium", tzinfo=ZoneInfo("Europe/Berlin"), locale="uk")
    assert str(escape(created)) in page and "10:35:15" in created
    assert "Olena" not in page

    for lang in ("ar", "fa"):
        page = (await audit.http.get(f"/v1/audit/subjects/{client}/report", params={"format": "html", "lang": lang}, headers=DPO)).text
        assert f'lang="{lang}" dir="rtl"' in page and CATALOGUE.gettext(lang, "Who received your data") in page
    assert "، " in page  # the Arabic-script list separator between categories
    de = (await audit.http.get(f"/v1/audit/subjects/{stranger}/report", params={"format": "html"}, headers=DPO)).text
    assert 'lang="de"' in de and "Keine Einträge." in de
