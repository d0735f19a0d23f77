"""What the consent service refuses. Each error keeps its problem type URN; the kit maps them to problem+json."""

from __future__ import annotations

from lotse_kit import errors


class ConsentRuleViolation(errors.Invalid):
    """A consent that may not be recorded (§67b SGB X, validity, recipients). `field` names the request field at fault."""

    title = "Consent cannot be recorded"
    type = "urn:lotse:problem:consent-invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, errors=[{"field": field, "message": message, "type": "consent_rule"}])
        self.field = field
        self.message = message


class ConsentNotFound(errors.NotFound):
    title = "Consent not found"
    type = "urn:lotse:problem:consent-not-found"


class ConsentAlreadyExpired(errors.Conflict):
    """A withdrawal of a consent that already expired: there is nothing left to withdraw."""

    title = "Consent already expired"
    type = "urn:lotse:problem:consent-expired"


class NotCollectingOrg(errors.Forbidden):
    """An organisation may record only the consents it collected itself."""

    title = "Not the collecting organisation"
    type = "urn:lotse:problem:not-collecting-org"


class UnsupportedLanguage(errors.Invalid):
    """A receipt asked for in a language the service has no texts in."""

    title = "Unsupported receipt language"
    type = "urn:lotse:problem:validation"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors=[{"field": "lang", "message": message, "type": "unsupported_language"}])
