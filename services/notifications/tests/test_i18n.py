"""Every message in every language: the catalogues against what the code and templates use, and rendering from real events."""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jinja2
import pytest
from babel.dates import format_date
from babel.messages.catalog import Catalog as PoCatalog

from contracts.events import (
    AcknowledgementOverdue,
    CaseHandedOver,
    ConsentGranted,
    ConsentWithdrawn,
    DeadlineApproaching,
    DeadlineMissed,
    InboxLeftUnfetched,
    ReferralAccepted,
    ReferralDeclined,
    ReferralSent,
)
from contracts.vocab import DataCategory, DeadlineKind, DeclineReason, Purpose
from lotse_kit.i18n import LANGUAGES, Catalogue, check_catalogue, direction, extract
from lotse_kit.network import OrgDirectory, parse_network
from services.notifications.adapters.templates import CHANNEL_FIELDS, LOCALE_DIR, Catalog, vocabulary
from services.notifications.domain.model import Channel, scrub
from services.notifications.domain.routing import ROUTES, templates_used
from services.notifications.handlers.deliveries import render
from tests.fixtures import catalogue_with, committed_template, message_ids

SERVICE_DIR = Path(__file__).resolve().parent.parent
POT = extract(SERVICE_DIR)
CATALOGUE = Catalogue(LOCALE_DIR)
CATALOG = Catalog()

NETWORK = """
version: 1
district: Kreis Paderborn
name: Test
timezone: Europe/Berlin
organisations:
  - {id: jobcenter-pb, name: Jobcenter Kreis Paderborn, kind: jobcenter, languages: [de], contact_email: jc@jc.example,
     services: [{id: job, name: Arbeitsvermittlung, needs: [job_placement]}]}
  - {id: caritas-pb, name: Caritasverband Paderborn, kind: welfare_association, languages: [de], contact_email: ca@ca.example,
     services: [{id: mbe, name: Migrationsberatung, needs: [residence_law_counselling]}]}
"""
DIRECTORY = OrgDirectory.of(parse_network(NETWORK))
CID = uuid.uuid4()
T = datetime(2025, 3, 14, 23, 30, tzinfo=UTC)  # already 15 March in Berlin

SAMPLES = {
    "lotse.deadline.approaching": DeadlineApproaching(
        client_id=CID,
        deadline_id=uuid.uuid4(),
        kind=DeadlineKind.CHANCEN_AUFENTHALT_END,
        due_at=T,
        responsible_org="jobcenter-pb",
        lead_time_days=14,
        days_left=3,
    ),
    "lotse.deadline.missed": DeadlineMissed(
        client_id=CID,
        deadline_id=uuid.uuid4(),
        kind=DeadlineKind.RESIDENCE_TITLE_EXPIRY,
        due_at=T,
        responsible_org="jobcenter-pb",
        missed_at=T,
    ),
    "lotse.referral.sent": ReferralSent(
        client_id=CID,
        referral_id=uuid.uuid4(),
        from_org="jobcenter-pb",
        to_org="caritas-pb",
        service="mbe",
        answer_due=date(2025, 3, 28),
        sent_at=T,
    ),
    "lotse.referral.accepted": ReferralAccepted(
        client_id=CID,
        referral_id=uuid.uuid4(),
        to_org="caritas-pb",
        from_org="jobcenter-pb",
        accepted_at=T,
        appointment_at=T + timedelta(days=3),
    ),
    "lotse.referral.declined": ReferralDeclined(
        client_id=CID,
        referral_id=uuid.uuid4(),
        to_org="caritas-pb",
        from_org="jobcenter-pb",
        reason=DeclineReason.NO_CAPACITY,
        declined_at=T,
    ),
    "lotse.consent.granted": ConsentGranted(
        client_id=CID,
        consent_id=uuid.uuid4(),
        collecting_org="jobcenter-pb",
        recipients=["caritas-pb", "jobcenter-pb"],
        purposes=[Purpose.REFERRAL, Purpose.CONTACT_FOR_NOTIFICATIONS],
        categories=[DataCategory.IDENTITY, DataCategory.CONTACT],
        legal_basis=["GDPR Art. 6(1)(a)"],
        form="paper",
        information_language="uk",
        granted_at=T,
        valid_until=T + timedelta(days=365),
    ),
    "lotse.consent.withdrawn": ConsentWithdrawn(client_id=CID, consent_id=uuid.uuid4(), withdrawn_at=T, disclosed_to=["caritas-pb"]),
    "lotse.acknowledgement.overdue": AcknowledgementOverdue(
        client_id=CID,
        org="caritas-pb",
        kind="erasure",
        acknowledged_event_id=uuid.uuid4(),
        collecting_org="jobcenter-pb",
        forwarded_at=T - timedelta(days=7),
        due_at=T,
    ),
    "lotse.inbox.left_unfetched": InboxLeftUnfetched(
        org="jobcenter-pb", pending=3, oldest_record_at=T - timedelta(days=4), unfetched_after_s=3 * 86400, mode="pull", detected_at=T
    ),
    "lotse.case.handed_over": CaseHandedOver(
        client_id=CID,
        from_org="jobcenter-pb",
        to_org="caritas-pb",
        handed_over_at=T,
        open_referral_ids=[uuid.uuid4()],
        open_deadline_ids=[uuid.uuid4(), uuid.uuid4()],
    ),
}


# ---------------------------------------------------------------- the catalogues
def test_every_message_is_translated_in_every_language_with_the_same_placeholders():
    assert len(POT) > 60  # the extraction found the templates' texts and the vocabulary
    assert check_catalogue(CATALOGUE, POT) == []


def test_the_committed_template_is_what_extraction_finds():
    assert message_ids(committed_template(LOCALE_DIR)) == message_ids(POT), "run make i18n-extract"


def test_the_check_fails_for_a_missing_message(tmp_path: Path):
    catalogue = catalogue_with(LOCALE_DIR, tmp_path, "fa", lambda po: po.delete("Hello,"))
    assert [(p.language, p.msgid, p.problem) for p in check_catalogue(catalogue, POT)] == [("fa", "Hello,", "missing")]


def test_the_check_fails_for_a_placeholder_that_differs(tmp_path: Path):
    msgid = "Reminder: deadline on %(due_date)s"

    def edit(po: PoCatalog) -> None:
        po[msgid].string = po[msgid].string.replace("%(due_date)s", "%(date)s")

    problems = check_catalogue(catalogue_with(LOCALE_DIR, tmp_path, "uk", edit), POT)
    assert [(p.language, p.msgid) for p in problems] == [("uk", msgid)] and "placeholders" in problems[0].problem


def test_the_check_fails_for_a_message_only_the_templates_use(tmp_path: Path):
    templates = tmp_path / "service"
    shutil.copytree(SERVICE_DIR / "templates", templates / "templates")
    (templates / "templates" / "messages" / "new.j2").write_text("{% block sms %}{% trans %}Brand new {{ x }}{% endtrans %}{% endblock %}")
    problems = check_catalogue(CATALOGUE, extract(templates))
    assert {(p.msgid, p.problem) for p in problems} >= {("Brand new %(x)s", "missing")}
    assert {p.language for p in problems if p.msgid == "Brand new %(x)s"} == set(LANGUAGES)


def test_vocabularies_are_complete():
    for lang in LANGUAGES:
        terms = vocabulary(CATALOGUE, lang)
        for name, enum in (
            ("deadline_kind", DeadlineKind),
            ("decline_reason", DeclineReason),
            ("purpose", Purpose),
            ("data_category", DataCategory),
        ):
            assert set(terms[name]) == {e.value for e in enum}, name
            assert all(t.strip() for t in terms[name].values())


def test_terms_are_translated():
    assert CATALOG.term("deadline_kind", "residence_title_expiry", "de") == "Ablauf des Aufenthaltstitels"
    assert CATALOG.term("deadline_kind", "residence_title_expiry", "en") == "Residence permit expires"


# ---------------------------------------------------------------- the templates
def test_every_routed_template_exists_for_its_channels():
    for name, channels in templates_used().items():
        assert name in CATALOG.messages, f"routing table names missing template {name}"
        fields = {f for c in channels for f in CHANNEL_FIELDS[c]}
        assert CATALOG.fields(name) >= fields, f"{name} lacks fields for {channels}"
    assert set(CATALOG.messages) == set(templates_used()), "a template no route uses"


def test_templates_hold_no_text_outside_trans_blocks():
    """Translators only touch .po files: a template's own text is whitespace, placeholders and markup."""
    for path in (SERVICE_DIR / "templates" / "messages").glob("*.j2"):
        source = re.sub(r"\{#.*?#\}", "", path.read_text(encoding="utf-8"), flags=re.S)
        outside = re.sub(r"\{% trans[^%]*%\}.*?\{% endtrans %\}", "", source, flags=re.S)
        outside = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", "", outside, flags=re.S)
        assert not re.search(r"\w", outside), f"{path.name}: untranslatable text {outside.strip()[:80]!r}"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.template)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_renders_from_a_real_event_in_every_language(route, lang):
    payload = scrub(route.trigger, SAMPLES[route.trigger].model_dump(mode="json"))
    for channel in route.channels:
        if channel is Channel.WEBHOOK:
            continue
        out = render(CATALOG, DIRECTORY, route.template, channel, lang, route.trigger, payload, "jobcenter-pb")
        assert "{{" not in out.text and "{%" not in out.text and "%(" not in out.text and "None" not in out.text
        if channel is Channel.EMAIL:
            assert out.subject and "\n" not in out.subject
            assert f'<html lang="{lang}" dir="{"rtl" if lang in ("ar", "fa") else "ltr"}">' in out.html
            assert out.html.count("<p>") == len(out.text.split("\n\n-- \n")[0].split("\n\n"))  # one <p> per paragraph


@pytest.mark.parametrize("lang", LANGUAGES)
def test_overdue_acknowledgements_tell_each_data_protection_contact_its_own_part(lang):
    """Four texts: to the organisation that did not acknowledge and to the one that collected the data, for a withdrawal and
    for an erasure; each names the forwarded record and the dates, and never the same sentence for both audiences."""
    sample = SAMPLES["lotse.acknowledgement.overdue"]
    seen: dict[tuple[str, str], str] = {}
    for kind in ("withdrawal", "erasure"):
        payload = scrub("lotse.acknowledgement.overdue", sample.model_copy(update={"kind": kind}).model_dump(mode="json"))
        for reader in ("caritas-pb", "jobcenter-pb"):  # caritas did not acknowledge; the Jobcenter collected the data
            out = render(
                CATALOG, DIRECTORY, "acknowledgement_overdue.dpo", Channel.EMAIL, lang, "lotse.acknowledgement.overdue", payload, reader
            )
            assert str(sample.acknowledged_event_id) in out.text and str(CID)[:8] in out.subject
            assert format_date(date(2025, 3, 15), format="long", locale=lang) in out.text  # due: 23:30 UTC is the 15th in Berlin
            assert ("Caritasverband Paderborn" in out.text) == (reader == "jobcenter-pb")  # the collecting side learns who is late
            seen[(kind, reader)] = out.text
    assert len(set(seen.values())) == 4
    if lang == "de":
        assert "Löschung" in seen[("erasure", "caritas-pb")] and "Widerruf" in seen[("withdrawal", "caritas-pb")]
        assert "Art. 17 DSGVO" in seen[("erasure", "caritas-pb")]


def test_german_text_is_the_converted_one():
    payload = scrub("lotse.referral.accepted", SAMPLES["lotse.referral.accepted"].model_dump(mode="json"))
    out = render(CATALOG, DIRECTORY, "referral_accepted.client", Channel.SMS, "ru", "lotse.referral.accepted", payload, "jobcenter-pb")
    assert out.text.startswith("Caritasverband Paderborn: ваше направление принято. Приём: ")  # the SMS's own (shorter) wording
    mail = render(CATALOG, DIRECTORY, "referral_accepted.org", Channel.EMAIL, "ar", "lotse.referral.accepted", payload, "jobcenter-pb")
    assert "قبلت Caritasverband Paderborn إحالتكم." in mail.text  # to the caseworkers: plural "you"


def test_dates_follow_the_locale_and_the_network_time_zone():
    payload = SAMPLES["lotse.deadline.approaching"].model_dump(mode="json")
    for lang in ("uk", "ar", "de"):
        out = render(
            CATALOG, DIRECTORY, "deadline_approaching.client", Channel.EMAIL, lang, "lotse.deadline.approaching", payload, "jobcenter-pb"
        )
        assert format_date(date(2025, 3, 15), format="long", locale=lang) in out.subject  # 23:30 UTC is the 15th in Berlin
        assert "Jobcenter Kreis Paderborn" in out.text


def test_html_escapes_names():
    directory = OrgDirectory.of(parse_network(NETWORK.replace("name: Jobcenter Kreis Paderborn", 'name: "<script>x</script> & Co"')))
    payload = SAMPLES["lotse.deadline.missed"].model_dump(mode="json")
    out = render(CATALOG, directory, "deadline_missed.client", Channel.EMAIL, "en", "lotse.deadline.missed", payload, "jobcenter-pb")
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<script>x</script> & Co" in out.text  # the text part is not HTML


def test_a_missing_placeholder_fails_instead_of_sending_a_gap():
    with pytest.raises(jinja2.UndefinedError, match="due_date"):
        CATALOG.render("deadline_missed.client", Channel.SMS, "de", {"org_name": "x", "deadline_kind": "y"})


def test_arabic_and_farsi_texts_are_in_their_script_and_right_to_left():
    arabic_script = re.compile(r"[\u0600-\u06FF]")
    payload = scrub("lotse.deadline.missed", SAMPLES["lotse.deadline.missed"].model_dump(mode="json"))
    for name in CATALOG.messages:
        route = next(r for r in ROUTES if r.template == name)
        payload = scrub(route.trigger, SAMPLES[route.trigger].model_dump(mode="json"))
        for lang in ("ar", "fa"):
            out = render(CATALOG, DIRECTORY, name, Channel.EMAIL, lang, route.trigger, payload, "jobcenter-pb")
            assert arabic_script.search(out.subject), f"{name}/{lang}"
            assert direction(lang) == "rtl" and '<body dir="rtl"' in out.html
