"""What the audit log refuses, as domain errors (the kit maps them to problem+json once)."""

from __future__ import annotations

from lotse_kit.errors import BadRequest, NotFound


class OutOfRange(BadRequest):
    """A requested index or tree size the log does not have (yet)."""

    title = "Out of range"
    type = "urn:lotse:problem:out-of-range"


class NoSuchEntry(NotFound):
    title = "No such entry"
    type = "urn:lotse:problem:no-such-entry"

    def __init__(self, index: int) -> None:
        super().__init__(f"The log has no entry {index}.")


class NoTreeHead(NotFound):
    title = "No signed tree head yet"
    type = "urn:lotse:problem:no-tree-head"

    def __init__(self) -> None:
        super().__init__("The log has not signed a tree head yet; try again shortly.")


class NoSuchClient(NotFound):
    """A client the caller may not see a report of: as if the log knew nothing about it."""

    title = "Not found"
    type = "urn:lotse:problem:not-found"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"No report about client {client_id} for this caller.")
