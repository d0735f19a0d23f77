"""Free text people type: one input type for every request and event field that carries it.

Free text is refused with a validation error naming the field (HTTP 422) when it contains a character
that has no business in text a person wrote and that breaks what stores or shows it:

- Unicode control characters (general category Cc: C0, DEL and C1) other than tab, line feed and
  carriage return. NUL in particular cannot be stored in a PostgreSQL `text` column at all; the others
  corrupt logs, CSV exports and terminals. Tab and line breaks (also CRLF, as browsers send from a
  `<textarea>`) are ordinary text.
- Unpaired UTF-16 surrogates (U+D800..U+DFFF), which a JSON string can spell (`"\\ud800"`) but which
  are not characters: they cannot be encoded as UTF-8.

Use `FreeText` where a field has no length limit of its own, the sized variants below otherwise, and
`NO_CONTROL_CHARACTERS` to add the check to a constrained string of another shape. The check adds
nothing to the JSON Schema, so making an existing field stricter keeps the exported contracts as they are.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# C0 without tab (09), LF (0A) and CR (0D); DEL and C1 (7F..9F); the surrogate block.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def refuse_control_characters(value: str) -> str:
    """`value` unchanged, or ValueError naming the first forbidden character and where it is."""
    found = _FORBIDDEN.search(value)
    if found is not None:
        raise ValueError(
            f"must not contain control characters (other than tab and line breaks) or unpaired surrogates; "
            f"found U+{ord(found.group()):04X} at position {found.start()}"
        )
    return value


NO_CONTROL_CHARACTERS = AfterValidator(refuse_control_characters)

FreeText = Annotated[str, NO_CONTROL_CHARACTERS]
ShortText = Annotated[str, StringConstraints(max_length=500), NO_CONTROL_CHARACTERS]  # a reason, an outcome, a note
LongText = Annotated[str, StringConstraints(max_length=4000), NO_CONTROL_CHARACTERS]  # a description, a message to a partner
PersonName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NO_CONTROL_CHARACTERS]
