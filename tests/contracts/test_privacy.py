"""The personal-data guard: every field of every event on a shared topic is classified (contracts/privacy.py)."""

from __future__ import annotations

from pydantic import BaseModel

from contracts import EVENTS, PARTNER_REFERRAL, events, topics
from contracts.events import PARTNER_ACK_TYPES, ClientEvent, ClientRegistered, Contact, EventData
from contracts.privacy import (
    FIELDS,
    ID,
    NEVER_SHARED,
    TIME,
    Classified,
    personal,
    personal_fields_on_shared_topics,
    problems,
    shared_channels,
    shared_events,
    stale_entries,
)
from contracts.vocab import DataCategory


def test_every_field_of_every_event_on_a_shared_topic_is_classified():
    found = {spec.schema_id: problems(spec.model) for spec in shared_events()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_allowlist_names_no_field_that_does_not_exist():
    assert stale_entries() == []


def test_shared_events_are_exactly_those_not_on_personal_data_topics():
    shared = {s.schema_id for s in shared_events()}
    assert "lotse.client.registered.v2" in shared and "lotse.client.registered.v1" in shared  # old versions too
    assert "lotse.disclosure.requested.v1" not in shared  # on lotse.disclosure-requests.v1, by design
    assert "lotse.withdrawal.acknowledged.v1" in shared  # on partner outboxes
    assert PARTNER_REFERRAL.schema_id not in shared  # on partner inboxes only, by design
    assert shared_channels(EVENTS["lotse.referral.accepted"]) == [topics.REFERRALS, "partner.{orgId}.outbox.v1"]
    for spec in EVENTS.values():
        on_shared_topic = spec.topic is not None and not topics.carries_personal_data(spec.topic)
        assert (spec.schema_id in shared) == (on_shared_topic or spec.type in PARTNER_ACK_TYPES)


def test_a_new_unclassified_field_fails_the_check():
    class WithAddress(ClientRegistered):
        address: str

    assert problems(ClientRegistered) == []
    assert problems(WithAddress) == ["WithAddress.address is not classified (contracts/privacy.py)"]


def test_unclassified_fields_of_nested_models_fail_the_check():
    class Home(BaseModel):
        street: str
        city: str

    class Moved(ClientEvent):
        moved_at: str
        home: Home | None = None

    allowlist = {**FIELDS, Moved: {"moved_at": TIME, "home": personal(DataCategory.CONTACT, "a test")}, Home: {"city": ID}}
    assert problems(Moved, allowlist) == ["Home.street is not classified (contracts/privacy.py)"]


def test_a_personal_field_on_a_shared_topic_needs_a_reason_and_a_category_that_may_be_shared():
    class Leaky(EventData):
        phone: str
        birth_year: int
        nested: list[Contact]

    allowlist: dict[type[BaseModel], dict[str, Classified]] = {
        **FIELDS,
        Leaky: {"phone": Classified(DataCategory.CONTACT), "birth_year": personal(DataCategory.IDENTITY, "a reason"), "nested": ID},
        Contact: {f: Classified(DataCategory.CONTACT) for f in Contact.model_fields},
    }
    assert problems(Leaky, allowlist) == [
        "Leaky.phone is contact on a shared topic without a shared_topic_reason",
        "Leaky.birth_year is identity, which never travels on a shared topic",
        "Leaky.nested is classified id but holds personal data",
    ]
    # Off the shared topics (the disclosure request, the partner inbox) only completeness is checked.
    assert problems(Leaky, allowlist, shared=False) == ["Leaky.nested is classified id but holds personal data"]


def test_an_event_with_personal_data_moved_to_a_shared_topic_would_fail():
    assert {DataCategory.IDENTITY, DataCategory.HEALTH} <= NEVER_SHARED
    assert "DisclosureRequestedV1.personal_data is not classified (contracts/privacy.py)" in problems(events.DisclosureRequestedV1)


def test_the_personal_data_on_shared_topics_is_the_reviewed_list():
    """The findings docs/contracts.md lists: changing this list is a privacy decision, made in review."""
    found = {schema: sorted(fields) for schema, fields in personal_fields_on_shared_topics().items()}
    assert found == {
        "lotse.client.registered.v2": ["languages", "legal_regime", "needs", "preferred_language", "residence"],
        "lotse.client.registered.v1": [
            "languages",
            "legal_regime",
            "needs",
            "preferred_language",
            "residence_title",
            "residence_valid_until",
        ],
        "lotse.client.updated.v1": ["languages", "needs", "preferred_language", "residence_title", "residence_valid_until"],
        "lotse.case.handed_over.v1": ["from_regime", "to_regime"],
        "lotse.consent.granted.v1": ["information_language"],
        "lotse.referral.sent.v1": ["need"],
        "lotse.deadline.registered.v1": ["due_at", "kind", "legal_note"],
        "lotse.deadline.approaching.v1": ["due_at", "kind", "legal_note"],
        "lotse.deadline.missed.v1": ["due_at", "kind", "legal_note"],
        "lotse.deadline.resolved.v1": ["due_at", "kind", "legal_note"],
        "lotse.notification.delivered.v1": ["language"],
        "lotse.notification.failed.v1": ["language"],
    }
