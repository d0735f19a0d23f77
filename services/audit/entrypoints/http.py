"""The auditor API: entries, signed tree heads, proofs, export and the data-subject report.

Access (`lotse_kit.access`, docs/security.md): auditors and data-protection officers read the log;
an organisation's dpo only the entries concerning their organisation and no full export; the Art. 15
report only for a dpo (an organisation's for clients it holds data on); tree heads are signed by the
audit service's own token or an operator.
"""

# No `from __future__ import annotations`: route parameters are typed with access policies bound inside
# the router builder (local names), and FastAPI resolves postponed annotations in module globals only.

import base64
import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import StringConstraints

from contracts.dates import SupportedDateTime
from contracts.text import NO_CONTROL_CHARACTERS
from contracts.topics import ORG_ID_PATTERN
from lotse_kit import access
from lotse_kit.context import CallerContext
from lotse_kit.errors import Forbidden, Invalid, problem
from lotse_kit.params import BIGINT_MAX, BigInt

from .. import views
from ..adapters.repository import EntryFilter, StoredEntry
from ..domain.commands import SignTreeHead
from ..domain.entries import parse_entry
from ..domain.tree_head import TreeHead, b64
from ..handlers import Deps, handle

log = logging.getLogger(__name__)

_CURSOR_PREFIX = "after:"

# An event type to filter by: compared with a text column, so free of control characters like any text from outside.
TypeFilter = Annotated[str, StringConstraints(max_length=200), NO_CONTROL_CHARACTERS]


def encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        index = int(text[len(_CURSOR_PREFIX) :])
        if not 0 <= index <= BIGINT_MAX:  # an entry index: a bigint column
            raise ValueError(text)
        return index
    except ValueError:
        raise problem(
            400, "Invalid cursor", "Pass the next_cursor of a previous page unchanged.", type_="urn:lotse:problem:invalid-cursor"
        ) from None


def entry_json(e: StoredEntry) -> dict[str, Any]:
    return {
        "index": e.index,
        "leaf_hash": b64(e.leaf_hash),
        "entry_b64": b64(e.entry),
        "entry": parse_entry(e.entry),
        "logged_at": e.logged_at.isoformat() if e.logged_at else None,
    }


def accessed(ctx: Any, what: str, **extra: Any) -> None:
    log.info("audit log read", extra={"acting_org": ctx.acting_org, "actor": ctx.actor, "what": what, **extra})


def router(deps: Deps) -> APIRouter:
    api = APIRouter(prefix="/v1/audit", tags=["audit"])
    guard = access.Guard(deps.directory)
    CallerCtx = Annotated[CallerContext, guard(access.AUDIT_READ)]
    Exporter = Annotated[CallerContext, guard(access.AUDIT_EXPORT)]
    Dpo = Annotated[CallerContext, guard(access.SUBJECT_REPORT)]
    Signer = Annotated[CallerContext, guard(access.TREE_HEAD_SIGNING)]

    @api.get("/entries")
    async def list_entries(
        ctx: CallerCtx,
        client_id: uuid.UUID | None = None,
        org: Annotated[str | None, Query(pattern=ORG_ID_PATTERN)] = None,
        type: Annotated[TypeFilter | None, Query()] = None,  # the API's name (shadows the builtin)
        time_from: Annotated[SupportedDateTime | None, Query(alias="from", description="event time >= from (RFC 3339)")] = None,
        time_to: Annotated[SupportedDateTime | None, Query(alias="to", description="event time < to (RFC 3339)")] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1), BigInt.query("limit")] = 100,
    ) -> dict[str, Any]:
        """Entries in log order, filtered; follow `next_cursor` for the next page (stable: the log only grows)."""
        for name, t in (("from", time_from), ("to", time_to)):
            if t is not None and t.tzinfo is None:
                raise Invalid(f"{name}: needs a UTC offset")
        after = decode_cursor(cursor) if cursor else None
        scope = access.audit_scope(ctx)
        if scope is not None:
            if org is not None and org != scope:
                raise Forbidden(f"A data-protection officer of {scope} reads only the entries concerning {scope}.")
            org = scope
        f = EntryFilter(client_id=str(client_id) if client_id else None, org=org, type=type, time_from=time_from, time_to=time_to)
        page = await views.entries(deps, f, after=after, limit=limit)
        accessed(ctx, "entries", filter={"client_id": f.client_id, "org": org, "type": type})
        return {
            "items": [entry_json(r) for r in page.items],
            "next_cursor": encode_cursor(page.items[-1].index) if page.more and page.items else None,
        }

    @api.get("/entries/{index}")
    async def get_entry(ctx: CallerCtx, index: Annotated[int, Path(ge=0), BigInt.path("index")]) -> dict[str, Any]:
        e = await views.entry(deps, index, org=access.audit_scope(ctx))
        accessed(ctx, "entry", index=index)
        return entry_json(e)

    @api.get("/tree-head")
    async def get_tree_head(ctx: CallerCtx) -> dict[str, Any]:
        """The latest signed tree head (RFC 6962 get-sth shape)."""
        return (await views.latest_tree_head(deps)).to_json()

    @api.post("/tree-head", status_code=201)
    async def sign_tree_head(ctx: Signer) -> dict[str, Any]:
        """Signs a tree head over the log as it is now."""
        head: TreeHead = await handle(SignTreeHead(requested_by=ctx.acting_org or ctx.actor), deps)
        return head.to_json()

    @api.get("/entries/{index}/inclusion-proof")
    async def inclusion_proof(
        ctx: CallerCtx,
        index: Annotated[int, Path(ge=0), BigInt.path("index")],
        tree_size: Annotated[int | None, Query(ge=1), BigInt.query("tree_size")] = None,
    ) -> dict[str, Any]:
        """RFC 9162 §2.1.3 audit path for the entry in the tree of `tree_size` (default: the latest signed head)."""
        p = await views.inclusion_proof(deps, index, tree_size)
        return {
            "leaf_index": p.index,
            "tree_size": p.tree_size,
            "leaf_hash": b64(p.leaf_hash),
            "audit_path": [b64(h) for h in p.audit_path],
        }

    @api.get("/consistency-proof")
    async def consistency_proof(
        ctx: CallerCtx,
        first: Annotated[int, Query(ge=1), BigInt.query("first")],
        second: Annotated[int, Query(ge=1), BigInt.query("second")],
    ) -> dict[str, Any]:
        """RFC 9162 §2.1.4 proof that the tree of size `second` extends the tree of size `first`."""
        proof = await views.consistency_proof(deps, first, second)
        return {"first": first, "second": second, "consistency": [b64(h) for h in proof]}

    @api.get("/export")
    async def export(
        ctx: Exporter,
        format: Literal["ndjson", "csv"] = "ndjson",
        tree_size: Annotated[
            int | None,
            Query(ge=0, description="Export entries [0, tree_size); default: the latest signed head."),
            BigInt.query("tree_size"),
        ] = None,
    ) -> StreamingResponse:
        """The log, streamed in index order with constant memory; verify it with `lotse audit verify`."""
        size, rows = await views.export(deps, tree_size)
        accessed(ctx, "export", tree_size=size, format=format)
        body = _ndjson(rows) if format == "ndjson" else _csv(rows)
        media = "application/x-ndjson" if format == "ndjson" else "text/csv; charset=utf-8"
        headers = {"X-Lotse-Tree-Size": str(size), "Content-Disposition": f'attachment; filename="audit-{size}.{format}"'}
        return StreamingResponse(body, media_type=media, headers=headers)

    @api.get("/subjects/{client_id}/report", response_model=None)
    async def subject_report(
        ctx: Dpo,
        client_id: uuid.UUID,
        format: Literal["json", "html"] = "json",
        lang: Annotated[str | None, Query(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] = None,
    ) -> JSONResponse | HTMLResponse:
        """GDPR Art. 15: who received which of the client's data, when, under which consent; consents and their status.
        For a district-wide dpo any client; for an organisation's dpo a client their organisation holds data on (else 404)."""
        report = await views.subject_report(
            deps, str(client_id), lang, may_read=lambda holders: access.may_read_subject_report(ctx, holders)
        )
        accessed(ctx, "subject-report", client_id=str(client_id))
        if format == "html":
            return HTMLResponse(views.subject_report_html(deps, report), headers={"Content-Language": report.language})
        return JSONResponse(report.to_json(), headers={"Content-Language": report.language})

    return api


_CHUNK = 500


async def _ndjson(rows: AsyncIterator[StoredEntry]) -> AsyncIterator[bytes]:
    buf: list[str] = []
    async for r in rows:
        buf.append(json.dumps({"index": r.index, "leaf_hash": b64(r.leaf_hash), "entry_b64": b64(r.entry)}, separators=(",", ":")))
        if len(buf) >= _CHUNK:
            yield ("\n".join(buf) + "\n").encode()
            buf = []
    if buf:
        yield ("\n".join(buf) + "\n").encode()


CSV_COLUMNS = (
    "index",
    "leaf_hash",
    "topic",
    "partition",
    "offset",
    "kind",
    "event_type",
    "event_id",
    "client_id",
    "acting_org",
    "event_time",
    "entry_b64",
)


async def _csv(rows: AsyncIterator[StoredEntry]) -> AsyncIterator[bytes]:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    async for r in rows:
        doc = parse_entry(r.entry) or {}
        pos, ce = doc.get("position") or {}, doc.get("ce") or {}
        w.writerow(
            (
                r.index,
                b64(r.leaf_hash),
                pos.get("topic"),
                pos.get("partition"),
                pos.get("offset"),
                doc.get("kind"),
                ce.get("type"),
                ce.get("id"),
                doc.get("client_id"),
                doc.get("acting_org"),
                ce.get("time"),
                b64(r.entry),
            )
        )
        n += 1
        if n % _CHUNK == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()
