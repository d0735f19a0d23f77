"""Rules about a client's case: who may work it, and what of the personal data a disclosure carries. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.events import Contact, Identity, PersonalData, ResidenceStatus
from contracts.vocab import DataCategory

from .errors import Forbidden, Invalid

# Fields of the registration that are personal data (kept in client_personal_data, never in events on shared topics).
PERSONAL_FIELDS = ("given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health")


def check_responsible(client: Mapping[str, Any], acting_org: str) -> None:
    """Only the organisation responsible for the case works it."""
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
