"""The catalog: every message in every language, placeholders in step, renders with real events, RTL where due."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from babel.dates import format_date

from contracts.events import (
    CaseHandedOver, ConsentGranted, ConsentWithdrawn, DeadlineApproaching, DeadlineMissed, ReferralAccepted, ReferralDeclined, ReferralSent,
)
from contracts.vocab import DataCategory, DeadlineKind, DeclineReason, Purpose
from services.notifications.adapters.network import OrgDirectory, OrgInfo
from services.notifications.adapters.templates import CHANNEL_FIELDS, Catalog
from services.notifications.domain.model import SUPPORTED_LANGUAGES, Channel, scrub
from services.notifications.domain.routing import ROUTES, templates_used
from services.notifications.handlers import render

CATALOG = Catalog()
DIRECTORY = OrgDirectory.of(
    OrgInfo("jobcenter-pb", "Jobcenter Kreis Paderborn", "jc@test", ("de",), {"job": "Arbeitsvermittlung"}),
    OrgInfo("caritas-pb", "Caritasverband Paderborn", "ca@test", ("de",), {"mbe": "Migrationsberatung"}),
)
CID = uuid.uuid4()
T = datetime(2025, 3, 14, 23, 30, tzinfo=UTC)  # already 15 March in Berlin

SAMPLES = {
    "lotse.deadline.approaching": DeadlineApproaching(client_id=CID, deadline_id=uuid.uuid4(), kind=DeadlineKind.CHANCEN_AUFENTHALT_END, due_at=T,
                                                      responsible_org="jobcenter-pb", lead_time_days=14, days_left=3),
    "lotse.deadline.missed": DeadlineMissed(client_id=CID, deadline_id=uuid.uuid4(), kind=DeadlineKind.RESIDENCE_TITLE_EXPIRY, due_at=T,
                                            responsible_org="jobcenter-pb", missed_at=T),
    "lotse.referral.sent": ReferralSent(client_id=CID, referral_id=uuid.uuid4(), from_org="jobcenter-pb", to_org="caritas-pb", service="mbe",
                                        answer_due=date(2025, 3, 28), sent_at=T),
    "lotse.referral.accepted": ReferralAccepted(client_id=CID, referral_id=uuid.uuid4(), to_org="caritas-pb", from_org="jobcenter-pb",
                                                accepted_at=T, appointment_at=T + timedelta(days=3)),
    "lotse.referral.declined": ReferralDeclined(client_id=CID, referral_id=uuid.uuid4(), to_org="caritas-pb", from_org="jobcenter-pb",
                                                reason=DeclineReason.NO_CAPACITY, declined_at=T),
    "lotse.consent.granted": ConsentGranted(client_id=CID, consent_id=uuid.uuid4(), collecting_org="jobcenter-pb", recipients=["caritas-pb", "jobcenter-pb"],
                                            purposes=[Purpose.REFERRAL, Purpose.CONTACT_FOR_NOTIFICATIONS], categories=[DataCategory.IDENTITY, DataCategory.CONTACT],
                                            legal_basis=["GDPR Art. 6(1)(a)"], form="paper", information_language="uk", granted_at=T, valid_until=T + timedelta(days=365)),
    "lotse.consent.withdrawn": ConsentWithdrawn(client_id=CID, consent_id=uuid.uuid4(), withdrawn_at=T, disclosed_to=["caritas-pb"]),
    "lotse.case.handed_over": CaseHandedOver(client_id=CID, from_org="jobcenter-pb", to_org="caritas-pb", handed_over_at=T,
                                             open_referral_ids=[uuid.uuid4()], open_deadline_ids=[uuid.uuid4(), uuid.uuid4()]),
}


def test_every_routed_template_exists_for_its_channels():
    for name, channels in templates_used().items():
        assert name in CATALOG.messages, f"routing table names missing template {name}"
        assert {Channel(c) for c in CATALOG.messages[name].placeholders} >= channels, f"{name} lacks channels {channels}"
    assert set(CATALOG.messages) == set(templates_used()), "a template no route uses"


@pytest.mark.parametrize("name", sorted(templates_used()))
def test_every_language_has_every_field_with_the_declared_placeholders(name):
    message = CATALOG.messages[name]
    assert set(message.texts) == set(SUPPORTED_LANGUAGES), f"{name}: languages {sorted(message.texts)}"
    for channel, declared in message.placeholders.items():
        for lang in SUPPORTED_LANGUAGES:
            used: set[str] = set()
            for f in CHANNEL_FIELDS[Channel(channel)]:
                assert message.texts[lang].get(f, "").strip(), f"{name}/{lang}: empty or missing {f}"
                used |= CATALOG.variables(name, lang, f)
            assert used == set(declared), f"{name}/{lang}/{channel}: uses {sorted(used)}, declares {sorted(declared)}"


def test_vocabularies_are_complete():
    for vocabulary, enum in (("deadline_kind", DeadlineKind), ("decline_reason", DeclineReason), ("purpose", Purpose), ("data_category", DataCategory)):
        assert set(CATALOG.vocab[vocabulary]) == {e.value for e in enum}, vocabulary
        for value, texts in CATALOG.vocab[vocabulary].items():
            assert set(texts) == set(SUPPORTED_LANGUAGES), f"{vocabulary}.{value}"
    assert set(CATALOG.vocab["layout"]["footer"]) == set(SUPPORTED_LANGUAGES)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.template)
@pytest.mark.parametrize("lang", SUPPORTED_LANGUAGES)
def test_renders_from_a_real_event_in_every_language(route, lang):
    payload = scrub(route.trigger, SAMPLES[route.trigger].model_dump(mode="json"))
    for channel in route.channels:
        if channel is Channel.WEBHOOK:
            continue
        out = render(CATALOG, DIRECTORY, route.template, channel, lang, route.trigger, payload, "jobcenter-pb")
        assert "{{" not in out.text and "{%" not in out.text and "None" not in out.text
        if channel is Channel.EMAIL:
            assert out.subject and "\n" not in out.subject
            assert f'<html lang="{lang}" dir="{"rtl" if lang in ("ar", "fa") else "ltr"}">' in out.html


def test_dates_follow_the_locale_and_the_network_time_zone():
    payload = SAMPLES["lotse.deadline.approaching"].model_dump(mode="json")
    for lang in ("uk", "ar", "de"):
        out = render(CATALOG, DIRECTORY, "deadline_approaching.client", Channel.EMAIL, lang, "lotse.deadline.approaching", payload, "jobcenter-pb")
        assert format_date(date(2025, 3, 15), format="long", locale=lang) in out.subject  # 23:30 UTC is the 15th in Berlin
        assert "Jobcenter Kreis Paderborn" in out.text


def test_html_escapes_names():
    directory = OrgDirectory.of(OrgInfo("jobcenter-pb", "<script>x</script> & Co", "a@test", ("de",)))
    payload = SAMPLES["lotse.deadline.missed"].model_dump(mode="json")
    out = render(CATALOG, directory, "deadline_missed.client", Channel.EMAIL, "en", "lotse.deadline.missed", payload, "jobcenter-pb")
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html


def test_a_missing_placeholder_fails_instead_of_sending_a_gap():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        CATALOG.render("deadline_missed.client", Channel.SMS, "de", {"org_name": "x", "deadline_kind": "y"})


def test_arabic_and_farsi_texts_are_in_their_script():
    arabic_script = re.compile(r"[\u0600-\u06FF]")
    for name, message in CATALOG.messages.items():
        for lang in ("ar", "fa"):
            assert arabic_script.search(message.texts[lang]["subject"]), f"{name}/{lang}"
