"""Integer request parameters bounded by the column they are compared with.

PostgreSQL's `bigint` ends at 2^63-1; a larger number in a path or a query string reaches the
database as an out-of-range argument and fails there (HTTP 500). Python's `int` has no such end, so
the bound is checked where the parameter is read:

- a path parameter that names a row (`/entries/{index}`) beyond the bound names nothing: 404;
- a query parameter (a size, a limit) beyond it is a bad request: 400 naming the parameter;
- a number decoded from an opaque cursor is checked with `fits_bigint` by the decoder, which refuses
  the cursor (400) as it refuses any other malformed one.

Use as metadata next to FastAPI's own:
`index: Annotated[int, Path(ge=0), BigInt.path("index")]`,
`tree_size: Annotated[int | None, Query(ge=1), BigInt.query("tree_size")] = None`.
The bound also appears as `maximum` in the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from .errors import BadRequest, NotFound

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)


def fits_bigint(n: int) -> bool:
    return BIGINT_MIN <= n <= BIGINT_MAX


@dataclass(frozen=True)
class BigInt:
    """Annotated metadata for an integer parameter compared with a `bigint` column (see the module doc)."""

    name: str
    in_path: bool

    @classmethod
    def path(cls, name: str) -> BigInt:
        return cls(name, in_path=True)

    @classmethod
    def query(cls, name: str) -> BigInt:
        return cls(name, in_path=False)

    def check(self, value: Any) -> Any:
        if isinstance(value, int) and not fits_bigint(value):
            detail = f"{self.name} {value} is beyond the largest possible value, {BIGINT_MAX}"
            if self.in_path:
                raise NotFound(detail)
            # Not a ValueError: pydantic would turn that into a 422; this is the caller's bad request.
            raise BadRequest(
                detail,
                title="Out of range",
                type_="urn:lotse:problem:out-of-range",
                errors=[{"field": self.name, "message": detail, "type": "out_of_range"}],
            )
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("maximum", BIGINT_MAX)
        return json_schema
