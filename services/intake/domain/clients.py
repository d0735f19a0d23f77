"""Rules about a client's case: who may work it, and what of the personal data a disclosure carries. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.events import Contact, Identity, PersonalData, ResidenceStatus
from contracts.vocab import DataCategory

from .errors import Forbidden, Invalid

# Fields of the registration that are personal data (kept in client_personal_data, never in events on shared topics).
PERSONAL_FIELDS = ("given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health")

# The fields of a case that belong to each data category (as `personal_data` below builds them). An
# organisation that sees a client only through a referral gets these only for consented categories.
CATEGORY_FIELDS: dict[DataCategory, tuple[str, ...]] = {
    DataCategory.IDENTITY: ("given_name", "family_name", "date_of_birth"),
    DataCategory.CONTACT: ("email", "phone", "preferred_language", "languages"),
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
    full = PersonalData(
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
    missing = [c.value for c in categories if getattr(full, c.value) is None]
    if missing:
        raise Invalid("categories", f"nothing is recorded for this client in {', '.join(missing)}")
    return full.restricted_to(set(categories))
