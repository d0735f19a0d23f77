"""Intake's refusals. Each subclasses a `lotse_kit.errors` class, so the kit maps it to problem+json once.

The problem `type` URNs and extension members are part of the API (docs/intake.md, tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import ClassVar

from contracts.vocab import DataCategory, Purpose
from lotse_kit import errors


class NotFound(errors.NotFound):
    title = "Not found"
    type = "urn:lotse:problem:not-found"


class Forbidden(errors.Forbidden):
    title = "Not allowed"
    type = "urn:lotse:problem:forbidden"


class Conflict(errors.Conflict):
    title = "Illegal state transition"
    type = "urn:lotse:problem:illegal-transition"


class Invalid(errors.Invalid):
    """Well-formed, but names something unknown or inconsistent: 422 naming the field, like request validation."""

    title = "Invalid request"
    type = "urn:lotse:problem:validation"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message, "type": "value_error"}])
        self.field = field
        self.message = message


class ConsentRequired(errors.Conflict):
    """The consent service did not allow the disclosure; nothing was written or sent."""

    title = "Consent required"
    type = "urn:lotse:problem:consent-required"

    def __init__(
        self,
        recipient: str,
        purpose: Purpose,
        categories: Iterable[DataCategory],
        missing_categories: Iterable[DataCategory],
        reason: str = "",
    ) -> None:
        missing = [DataCategory(c).value for c in missing_categories]
        detail = (
            f"No valid consent for recipient {recipient}, purpose {purpose.value}"
            + (f", categories {', '.join(missing)}" if missing else "")
            + (f": {reason}" if reason else "")
        )
        super().__init__(
            detail,
            recipient=recipient,
            purpose=purpose.value,
            requested_categories=[DataCategory(c).value for c in categories],
            missing_categories=missing,
            reason=reason,
        )
        self.recipient = recipient
        self.purpose = purpose
        self.missing_categories = missing


class ConsentUnavailable(errors.Unavailable):
    """The consent decision could not be obtained; intake then sends nothing (fail closed)."""

    title = "Consent service unavailable"
    type = "urn:lotse:problem:consent-unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}  # callers may try again after five seconds

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}. Nothing was sent; try again.")
        self.reason = reason


class ClientErased(errors.Gone):
    """The client's personal data was erased (GDPR Art. 17): nothing personal can be shown, changed or disclosed."""

    title = "Client erased"
    type = "urn:lotse:problem:client-erased"

    def __init__(self, client_id: object, erased_at: datetime) -> None:
        super().__init__(f"the personal data of client {client_id} was erased", client_id=str(client_id), erased_at=erased_at.isoformat())


class RetentionPeriodRunning(errors.Conflict):
    """A legal retention period still runs for a category the client has data in: erasure must wait."""

    title = "Retention period running"
    type = "urn:lotse:problem:retention-period"

    def __init__(self, client_id: object, until: Mapping[DataCategory, datetime]) -> None:
        last = max(until.values())
        super().__init__(
            f"the personal data of client {client_id} must be kept until {last.isoformat()} "
            f"({', '.join(c.value for c in until)}); nothing was erased",
            retained_until=last.isoformat(),
            retained_categories={c.value: t.isoformat() for c, t in until.items()},
        )


class DoNotContact(errors.Conflict):
    """The client asked not to be contacted: no contact data for notifications."""

    title = "The client asked not to be contacted"
    type = "urn:lotse:problem:do-not-contact"

    def __init__(self, client_id: object) -> None:
        super().__init__(f"client {client_id} asked not to be contacted; send nothing to the client", client_id=str(client_id))
