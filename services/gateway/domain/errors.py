"""The gateway's refusals; the kit turns them into problem+json (lotse_kit.problems)."""

from __future__ import annotations

from typing import ClassVar

from lotse_kit.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable


class NotYourInbox(Forbidden):
    title = "Another organisation's inbox"
    type = "urn:lotse:problem:gateway:not-your-inbox"


class NotOverHttps(NotFound):
    title = "No HTTPS inbox for this organisation"
    type = "urn:lotse:problem:gateway:no-https-inbox"


class InvalidCursor(Invalid):
    title = "Invalid cursor"
    type = "urn:lotse:problem:gateway:invalid-cursor"


class UnknownCursor(Conflict):
    title = "Unknown cursor"
    type = "urn:lotse:problem:gateway:unknown-cursor"


class InvalidEvent(Invalid):
    title = "Invalid event"
    type = "urn:lotse:problem:gateway:invalid-event"


class EventIdReused(Conflict):
    title = "Event id already used for another event"
    type = "urn:lotse:problem:gateway:event-id-reused"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"
    type = "urn:lotse:problem:gateway:unsupported-media-type"


class TooLarge(DomainError):
    status = 413
    title = "Request too large"
    type = "urn:lotse:problem:gateway:too-large"


class InboxUnavailable(Unavailable):
    """The inbox's Kafka cannot be read now (readiness says so too); the partner asks again later."""

    title = "Inbox not reachable now"
    type = "urn:lotse:problem:gateway:inbox-unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}
