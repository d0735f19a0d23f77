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


class KeyRejected(errors.Invalid):
    """A key that cannot be registered: not a public EC P-256 JWK, or a private key (which is never stored)."""

    title = "Key cannot be registered"
    type = "urn:lotse:problem:key-invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, errors=[{"field": field, "message": message, "type": "key_rule"}])


class KeyNotFound(errors.NotFound):
    title = "Key not found"
    type = "urn:lotse:problem:key-not-found"


class KeyConflict(errors.Conflict):
    """A key id already in use (or retired) for the organisation, with another key."""

    title = "Key id already in use"
    type = "urn:lotse:problem:key-conflict"


class OtherOrganisation(errors.Forbidden):
    """A request naming another organisation's keys or disclosure records."""

    title = "Not this organisation's"
    type = "urn:lotse:problem:other-organisation"
