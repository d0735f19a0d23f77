"""Pure rules: retry decisions, Retry-After, token bucket, language fallback, routing table, scrubbing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lotse_kit.i18n import choose_language
from lotse_kit.network import OrgDirectory
from services.notifications.config import STANDARD_WEBHOOKS_SCHEDULE_S, NotificationsSettings
from services.notifications.domain.errors import InvalidEndpointUrl
from services.notifications.domain.model import (
    Channel,
    Outcome,
    RetryPolicy,
    Status,
    TokenBucket,
    check_endpoint_url,
    decide,
    parse_retry_after,
    scrub,
)
from services.notifications.domain.routing import ROUTES, Audience, concerned_orgs, orgs_named, routes_for

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def test_default_schedule_is_standard_webhooks():
    s = NotificationsSettings()
    assert s.retry_schedule_s == STANDARD_WEBHOOKS_SCHEDULE_S == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert RetryPolicy(s.retry_schedule_s).max_attempts == 8


def test_retry_schedule_is_configurable_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_RETRY_SCHEDULE_S", "[1, 2]")
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_RATE_LIMITS", '{"sms": {"rate_per_s": 2, "burst": 3}}')
    s = NotificationsSettings()
    assert s.retry_schedule_s == [1.0, 2.0]
    assert s.rate_limits["sms"].burst == 3


def test_retries_follow_the_schedule_with_jitter_then_give_up():
    policy = RetryPolicy([5, 300], jitter=0.2)
    low = decide(Outcome.retry("HTTP 500"), 1, policy, NOW, rng=lambda a, b: a)
    high = decide(Outcome.retry("HTTP 500"), 1, policy, NOW, rng=lambda a, b: b)
    assert low.status is Status.SENDING and low.next_attempt_at == NOW + timedelta(seconds=4)
    assert high.next_attempt_at == NOW + timedelta(seconds=6)
    second = decide(Outcome.retry("HTTP 500"), 2, policy, NOW, rng=lambda a, b: 1.0)
    assert second.next_attempt_at == NOW + timedelta(seconds=300)
    final = decide(Outcome.retry("HTTP 500"), 3, policy, NOW)
    assert final.status is Status.TEMPORARY_FAILURE and final.final and final.next_attempt_at is None


def test_retry_after_is_honoured_but_capped():
    policy = RetryPolicy([5], jitter=0.0, retry_after_max_s=3600)
    later = decide(Outcome.retry("HTTP 429", retry_after_s=120), 1, policy, NOW)
    assert later.next_attempt_at == NOW + timedelta(seconds=120)
    sooner = decide(Outcome.retry("HTTP 503", retry_after_s=1), 1, policy, NOW)
    assert sooner.next_attempt_at == NOW + timedelta(seconds=5)  # never earlier than the schedule
    capped = decide(Outcome.retry("HTTP 503", retry_after_s=10**9), 1, policy, NOW)
    assert capped.next_attempt_at == NOW + timedelta(seconds=3600)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.delivered(), Status.DELIVERED),
        (Outcome.permanent("HTTP 410", disable_endpoint=True), Status.PERMANENT_FAILURE),
        (Outcome.technical("template"), Status.TECHNICAL_FAILURE),
    ],
)
def test_final_outcomes_do_not_retry(outcome, status):
    d = decide(outcome, 1, RetryPolicy([5, 5]), NOW)
    assert d.status is status and d.final and d.next_attempt_at is None


def test_parse_retry_after():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Fri, 14 Mar 2025 09:32:30 GMT", NOW) == 150
    assert parse_retry_after("Fri, 14 Mar 2025 09:00:00 GMT", NOW) == 0  # already past
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_token_bucket_allows_a_burst_then_the_rate():
    t = [0.0]
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=lambda: t[0])
    assert bucket.available() == 3
    assert bucket.take(3)
    assert not bucket.take(1)
    assert bucket.seconds_until(1) == pytest.approx(0.5)
    t[0] = 0.5
    assert bucket.available() == 1
    t[0] = 100
    assert bucket.available() == 3  # never more than the burst


@pytest.mark.parametrize(
    ("preferred", "languages", "expected"),
    [
        ("uk", (), "uk"),
        ("ar-SY", (), "ar"),
        ("ti", ("fa",), "fa"),  # Tigrinya is not (yet) supported: the client's other language
        ("ti", (), "en"),  # then English
        (None, (), "en"),
    ],
)
def test_language_fallback(preferred, languages, expected):
    """How the service picks a client's language (handlers.triggers): the kit's choice, preferred first."""
    assert choose_language(preferred, languages) == expected


def test_german_is_the_last_fallback():
    assert choose_language("ti", (), supported=("de",)) == "de"


def test_caseworker_messages_are_in_the_organisations_first_supported_language():
    from services.notifications.handlers.triggers import org_language

    assert org_language(None) == "de"
    org = OrgDirectory.of(_network_with_languages("[ti, tr, de]")).organisation("caritas-pb")
    assert org_language(org) == "tr"
    assert org_language(OrgDirectory.of(_network_with_languages("[ti]")).organisation("caritas-pb")) == "de"  # not English


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("http://p.example/x", False, "must be absolute and use https"),
        ("/relative", True, "must be absolute and use https or http"),
        ("https://user:pw@p.example/x", False, "credentials in the URL"),
    ],
)
def test_endpoint_urls_are_checked(url, allow_http, problem):
    with pytest.raises(InvalidEndpointUrl, match=problem) as exc:
        check_endpoint_url(url, allow_http=allow_http)
    assert (
        exc.value.status == 422 and exc.value.type == "urn:lotse:problem:invalid-endpoint-url" and exc.value.extensions == {"field": "url"}
    )
    assert check_endpoint_url("http://p.example/x", allow_http=True) == "http://p.example/x"


def test_routing_table_covers_the_issue():
    triggers = {r.trigger for r in ROUTES}
    assert triggers == {
        "lotse.deadline.approaching",
        "lotse.deadline.missed",
        "lotse.referral.sent",
        "lotse.referral.accepted",
        "lotse.referral.declined",
        "lotse.consent.granted",
        "lotse.consent.withdrawn",
        "lotse.case.handed_over",
        "lotse.acknowledgement.overdue",
        "lotse.inbox.left_unfetched",
    }
    # The HTTPS gateway's notice: the organisation's technical contact (contact_email), by e-mail only.
    [unfetched] = routes_for("lotse.inbox.left_unfetched")
    assert unfetched.audience is Audience.ORGANISATION and unfetched.channels == (Channel.EMAIL,)
    assert orgs_named(unfetched, {"org": "a-org"}) == ["a-org"]
    [overdue] = routes_for("lotse.acknowledgement.overdue")
    assert overdue.audience is Audience.DATA_PROTECTION and overdue.channels == (Channel.EMAIL,)
    # The recipient that is late, then the collecting organisation: each once, and nobody when it is the same.
    assert orgs_named(overdue, {"org": "b-org", "collecting_org": "a-org"}) == ["b-org", "a-org"]
    assert orgs_named(overdue, {"org": "b-org", "collecting_org": "b-org"}) == ["b-org"]
    assert orgs_named(overdue, {"org": "b-org", "collecting_org": None}) == ["b-org"]
    withdrawn = routes_for("lotse.consent.withdrawn")
    assert [r.audience for r in withdrawn] == [Audience.ORGANISATION]
    assert orgs_named(withdrawn[0], {"disclosed_to": ["a-org", "b-org", "a-org"]}) == ["a-org", "b-org"]
    assert [r.audience for r in routes_for("lotse.consent.granted")] == [Audience.CLIENT]
    assert concerned_orgs({"from_org": "x-org", "to_org": "y-org", "recipients": ["x-org", "z-org"]}) == ["x-org", "y-org", "z-org"]


def test_free_text_is_not_kept():
    data = {"reason": "not_eligible", "reason_text": "Frau X. ist ...", "client_id": "c"}
    assert scrub("lotse.referral.declined", data) == {"reason": "not_eligible", "client_id": "c"}
    assert "reason" not in scrub("lotse.case.handed_over", {"reason": "moved in with her sister", "to_org": "a"})


def _network_text(languages: str = "[de]") -> str:
    return (
        "version: 1\ndistrict: test\nname: Test\ntimezone: Europe/Berlin\norganisations:\n"
        f"  - id: caritas-pb\n    name: Caritas\n    kind: welfare_association\n    contact_email: team@caritas-pb.example\n    languages: {languages}\n"
        "    services: [{id: mbe, name: Migrationsberatung, needs: [language_course]}]\nprocess_plans: []\n"
    )


def _network_with_languages(languages: str):
    from lotse_kit.network import parse_network

    return parse_network(_network_text(languages))


def test_what_the_service_reads_from_the_network_file(tmp_path: Path):
    """What rendering and addressing use: names, service names, contact_email, the time zone."""
    p = tmp_path / "n.yaml"
    p.write_text(_network_text())
    d = OrgDirectory.from_file(p)
    assert d.org_ids() == ["caritas-pb"]
    assert d.organisation("caritas-pb").contact_email == "team@caritas-pb.example"
    assert d.service_name("caritas-pb", "mbe") == "Migrationsberatung"
    assert d.name("unknown-org") == "unknown-org" and d.organisation("unknown-org") is None
    assert d.timezone == "Europe/Berlin"


def test_bootstrap_refuses_an_unknown_adapter():
    from services.notifications.bootstrap import bootstrap

    with pytest.raises(TypeError, match=r"unknown adapters \['mailer'\]"):
        bootstrap(NotificationsSettings(), mailer=object())


def test_a_missing_network_file_stops_the_service_at_start(tmp_path: Path):
    from lotse_kit.network import NetworkConfigError
    from services.notifications.bootstrap import bootstrap

    with pytest.raises(NetworkConfigError, match="cannot read"):
        bootstrap(NotificationsSettings(network_file=tmp_path / "missing.yaml"))
