"""Rules about a client's case: who may work it, and what of the personal data a disclosure carries. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from contracts.events import Contact, Identity, PersonalData, ResidenceStatus
from contracts.vocab import DataCategory

from .errors import Forbidden, Invalid

# Fields of the registration that are personal data (kept in client_personal_data, never in events on shared topics).
PERSONAL_FIELDS = ("given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health")

# The fields of a case that belong to each data category (as `personal_data` below builds them; the client's
# wish not to be contacted travels with the contact data, as SealedContent.do_not_contact). An organisation
# that sees a client only through a referral gets these only for consented categories.
CATEGORY_FIELDS: dict[DataCategory, tuple[str, ...]] = {
    DataCategory.IDENTITY: ("given_name", "family_name", "date_of_birth"),
    DataCategory.CONTACT: ("email", "phone", "preferred_language", "languages", "do_not_contact"),
    DataCategory.RESIDENCE_STATUS: ("residence_title", "residence_valid_until"),
    DataCategory.NEEDS: ("needs",),
    DataCategory.EDUCATION_QUALIFICATIONS: ("education_qualifications",),
    DataCategory.HEALTH: ("health",),
}
# What every organisation that sees the client at all may see: pseudonymous case facts.
CASE_FACTS = ("client_id", "registering_org", "responsible_org", "registered_at", "updated_at")
# Referrals whose receiver sees the client (through the consent): open or completed ones. A declined,
# revoked or blocked referral gives its receiver nothing.
RECEIVER_SEES = ("sent", "accepted", "completed")


def restrict_case(case: Mapping[str, Any], categories: set[DataCategory]) -> dict[str, Any]:
    """The case as a receiving organisation sees it: the case facts and the fields of `categories` only."""
    out = {k: case[k] for k in CASE_FACTS}
    for category in DataCategory:
        if category in categories:
            out.update({f: case[f] for f in CATEGORY_FIELDS[category]})
    return out


def check_responsible(client: Mapping[str, Any], acting_org: str) -> None:
    """Only the organisation responsible for the case works it (others that see the case get 403)."""
    if client["responsible_org"] != acting_org:
        raise Forbidden(f"only the responsible organisation {client['responsible_org']} may do this, not {acting_org}")


def personal_data(client: Mapping[str, Any], personal: Mapping[str, Any], categories: list[DataCategory]) -> PersonalData:
    """The client's personal data, restricted to `categories`; raises Invalid for a category with nothing recorded."""
    full = full_personal_data(client, personal)
    missing = [c.value for c in categories if getattr(full, c.value) is None]
    if missing:
        raise Invalid("categories", f"nothing is recorded for this client in {', '.join(missing)}")
    return full.restricted_to(set(categories))


def corrected_categories(changed: Iterable[str]) -> list[DataCategory]:
    """The data categories whose values a change of these fields corrects (GDPR Art. 16), in category order.
    Fields of no category (legal regime, responsible organisation) correct nothing a recipient received."""
    fields = set(changed)
    found = {c for c, names in CATEGORY_FIELDS.items() if fields & set(names)}
    return [c for c in DataCategory if c in found]


def recorded_categories(client: Mapping[str, Any], personal: Mapping[str, Any] | None) -> set[DataCategory]:
    """The categories the client has data in (those a retention period can apply to)."""
    out: set[DataCategory] = set()
    p = personal or {}
    if p.get("given_name") or p.get("family_name") or p.get("date_of_birth"):
        out.add(DataCategory.IDENTITY)
    if p.get("email") or p.get("phone") or client["preferred_language"] or list(client["languages"] or []):
        out.add(DataCategory.CONTACT)
    if client["residence_title"] or client["residence_valid_until"]:
        out.add(DataCategory.RESIDENCE_STATUS)
    if list(client["needs"] or []):
        out.add(DataCategory.NEEDS)
    if p.get("education_qualifications"):
        out.add(DataCategory.EDUCATION_QUALIFICATIONS)
    if p.get("health"):
        out.add(DataCategory.HEALTH)
    return out


def running_retention(
    recorded: set[DataCategory], retention_days: Mapping[DataCategory, int], last_activity: datetime, now: datetime
) -> dict[DataCategory, datetime]:
    """The categories whose legal retention period (days from the case's last activity) still runs, and until when."""
    until = {c: last_activity + timedelta(days=days) for c, days in retention_days.items() if c in recorded and days > 0}
    return {c: t for c, t in sorted(until.items(), key=lambda kv: list(DataCategory).index(kv[0])) if t > now}


def full_personal_data(client: Mapping[str, Any], personal: Mapping[str, Any]) -> PersonalData:
    """Everything recorded about the client, by category."""
    return PersonalData(
        identity=Identity(given_name=personal["given_name"], family_name=personal["family_name"], date_of_birth=personal["date_of_birth"]),
        contact=Contact(
            email=personal["email"],
            phone=personal["phone"],
            preferred_language=client["preferred_language"],
            languages=list(client["languages"]),
        ),
        residence_status=ResidenceStatus(title=client["residence_title"], valid_until=client["residence_valid_until"]),
        needs=list(client["needs"]),
        education_qualifications=personal["education_qualifications"],
        health=personal["health"],
    )
