"""Writes `docs/events.md`, the event catalogue: every event type and version with its topic, key, schema
and fields, the services that produce and consume it, and the upcasting chain of older versions.

It reuses what `contracts.export` builds the AsyncAPI documents from (each service's `DECLARATION`, the
JSON Schemas of `contracts/schemas/`), so the catalogue, the AsyncAPI documents and the code agree.

    python -m contracts.catalogue --write  # rewrite docs/events.md
    python -m contracts.catalogue --check  # exit 1 if the committed docs/events.md is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import EVENTS, SCHEMAS, EventSpec, current_of
from .export import SERVICES, declaration, json_schema
from .upcasting import UPCASTERS

if TYPE_CHECKING:
    from lotse_kit.declaration import ServiceDeclaration

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "events.md"

# Partner systems are no service with a declaration: what the services consume on a partner's outbox is
# written by that partner, what they produce on its inbox is read by it.
PARTNERS = "partner systems"


class CatalogueError(Exception):
    """The contracts cannot be catalogued as they are (e.g. two schemas define one type name differently)."""


@dataclass(frozen=True)
class Use:
    """One service producing or consuming one message on one channel (consumers: through one consumer group)."""

    party: str
    channel: str
    group: str | None = None

    def render(self) -> str:
        via = f" (group `{self.group}`)" if self.group else ""
        return f"{self.party} on `{self.channel}`{via}"


def _message_id(spec: EventSpec) -> str:
    from lotse_kit.declaration import message_id

    return message_id(spec)


def _group(service: str, subscription: str) -> str:
    """The subscription's consumer group under the service's default schema, without a namespace prefix."""
    from lotse_kit.naming import Naming

    return Naming("", service.replace("-", "_")).consumer_group(subscription)


def _uses(decls: Iterable[ServiceDeclaration]) -> tuple[dict[str, list[Use]], dict[str, list[Use]]]:
    """By message id: who produces it, and who consumes it."""
    from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX

    produced: dict[str, list[Use]] = {}
    consumed: dict[str, list[Use]] = {}
    for decl in decls:
        for channel, mids in decl.produces().items():
            for mid in mids:
                produced.setdefault(mid, []).append(Use(decl.service, channel))
                if channel == PARTNER_INBOX:
                    consumed.setdefault(mid, []).append(Use(PARTNERS, channel))
        for sub in decl.subscriptions:
            for channel, mids in sub.consumes().items():
                for mid in mids:
                    consumed.setdefault(mid, []).append(Use(decl.service, channel, _group(decl.service, sub.name)))
                    if channel == PARTNER_OUTBOX:
                        produced.setdefault(mid, []).append(Use(PARTNERS, channel))
    return {m: _sorted(u) for m, u in produced.items()}, {m: _sorted(u) for m, u in consumed.items()}


def _sorted(uses: list[Use]) -> list[Use]:
    return sorted(set(uses), key=lambda u: (u.party, u.channel, u.group or ""))


# ------------------------------------------------------------------ JSON Schema to text
def _anchor(name: str) -> str:
    """GitHub's heading anchor for a heading that is exactly `name` in backticks."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _type(schema: dict[str, Any]) -> str:
    """A short, readable type for a JSON Schema fragment of the kind pydantic emits."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema:
        alts = [s for s in schema["anyOf"] if s.get("type") != "null"]
        text = " or ".join(_type(s) for s in alts)
        return f"{text} or null" if len(alts) < len(schema["anyOf"]) else text
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"array of {_type(schema.get('items', {}))}"
        if "minItems" in schema:
            text += f", at least {schema['minItems']}"
        return text
    notes = []
    if "format" in schema:
        notes.append(str(schema["format"]))
    if "pattern" in schema:
        notes.append(f"`{schema['pattern']}`")
    if "maxLength" in schema:
        notes.append(f"at most {schema['maxLength']} characters")
    if "minimum" in schema:
        notes.append(f"≥ {schema['minimum']}")
    return f"{kind} ({', '.join(notes)})" if notes else str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", ()))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        need = "yes" if name in required else f"no (default `{json.dumps(prop['default'])}`)" if "default" in prop else "no"
        rows.append(f"| `{name}` | {_cell(_type(prop))} | {need} | {_cell(str(prop.get('description', '')))} |")
    return rows


def _key(schema: dict[str, Any]) -> str:
    """The record key: `contracts.encode` keys a record by its subject, the event's `client_id` where it has one."""
    if "client_id" not in schema.get("properties", {}):
        return "none"
    if "client_id" in schema.get("required", ()):
        return "`client_id` (the pseudonymous client id)"
    return "`client_id` when the event has one, else none"


# ------------------------------------------------------------------ the document
def _ordered_specs() -> list[EventSpec]:
    """Every schema: by type, then newest version first; the current schema of a type before its variants."""
    return sorted(SCHEMAS.values(), key=lambda s: (s.type, EVENTS.get(s.type) is not s, -s.version, s.schema_id))


def _nobody(spec: EventSpec, *, consumers: bool) -> str:
    """What to say where no declaration names a schema: an older version no service writes any more."""
    if EVENTS.get(spec.type) is spec:
        return "no service"
    current = current_of(spec)
    if not consumers:
        return "none now (older records only)"
    if current is not None:
        return f"read as `{current.schema_id}` (upcast) by its consumers"
    return "none declared (older records stay decodable)"


def _status(spec: EventSpec) -> str:
    if EVENTS.get(spec.type) is spec:
        return "current"
    if current_of(spec) is not None:
        return "older version, upcast on decoding"
    return "own schema, decoded as it is"


def _upcasting() -> list[str]:
    lines = [
        "## Upcasting",
        "",
        "A record written under an older version is validated against its own schema, then upcast one version at",
        "a time to the current one (`contracts/upcasting.py`); handlers only see the current model. A missing or",
        "failing step makes the record `schema-invalid`: it goes to the DLQ with the reason.",
        "",
    ]
    chains = sorted({(s.type, s.version) for s in SCHEMAS.values() if current_of(s) is not None})
    if not chains:
        lines.append("No event has an older version that is upcast.")
    for event_type, version in chains:
        current = EVENTS[event_type]
        lines.append(f"- `{event_type}`: v{version} → v{current.version}")
        for v in range(version, current.version):
            step = UPCASTERS.get((event_type, v))
            if step is None:
                lines.append(f"  - v{v} → v{v + 1}: **no upcaster** (records of v{v} are dead-lettered)")
                continue
            doc = " ".join((step.__doc__ or "").split())
            lines.append(f"  - v{v} → v{v + 1}: `{step.__module__}.{step.__qualname__}`" + (f": {doc}" if doc else ""))
    variants = [s for s in _ordered_specs() if EVENTS.get(s.type) is not s and current_of(s) is None]
    if variants:
        lines += ["", "Schemas of their own, decoded as they are (no upcasting):", ""]
        lines += [f"- `{s.schema_id}` ({s.type} v{s.version}): {s.description}" for s in variants]
    return lines


def _shared_types(schemas: Iterable[dict[str, Any]]) -> list[str]:
    defs: dict[str, dict[str, Any]] = {}
    for schema in schemas:
        for name, d in schema.get("$defs", {}).items():
            if name in defs and defs[name] != d:
                raise CatalogueError(f"two schemas define {name!r} differently: give one of the models another name")
            defs[name] = d
    lines = ["## Types", "", "Types the fields above refer to (`$defs` of the JSON Schemas).", ""]
    for name in sorted(defs):
        d = defs[name]
        lines += [f"### `{name}`", ""]
        if d.get("description"):
            lines += [_cell(str(d["description"])), ""]
        if "properties" in d:
            lines += [*_fields(d), ""]
        else:
            lines += [_cell(_type(d)), ""]
    return lines


def _uses_list(what: str, uses: list[Use], nobody: str) -> list[str]:
    if not uses:
        return [f"- {what}: {nobody}"]
    return [f"- {what}:", *(f"  - {u.render()}" for u in uses)]


def render() -> str:
    decls = [declaration(s) for s in SERVICES]
    produced, consumed = _uses(decls)
    specs = _ordered_specs()
    schemas = {s.schema_id: json_schema(s) for s in specs}

    out = [
        "# Event catalogue",
        "",
        "<!-- Generated by `python -m contracts.catalogue --write` from contracts/events.py and the services'",
        "     declarations; do not edit by hand. `python -m contracts.catalogue --check` fails when it is stale. -->",
        "",
        "Every event that crosses a service boundary, at every version that can still be read, with who produces",
        "and who consumes it. Producers and consumers come from each service's declaration",
        "(`services/<name>/entrypoints/consumers.py: DECLARATION`), the source of `contracts/asyncapi/` too; fields",
        "from the JSON Schemas in `contracts/schemas/`. Envelope, topics and evolution rules: [contracts.md](contracts.md).",
        "Consumer groups are shown without the deployment's `LOTSE_TOPIC_NAMESPACE` prefix and under the service's",
        f"default database schema; `{PARTNERS}` are the organisations' own systems on their inbox and outbox topics.",
        "",
        "## Overview",
        "",
        "| event | version | schema | topic | producers | consumers |",
        "|---|---|---|---|---|---|",
    ]
    for spec in specs:
        mid = _message_id(spec)
        prod = sorted({u.party for u in produced.get(mid, [])})
        cons = sorted({u.party for u in consumed.get(mid, [])})
        link = f"[`{spec.schema_id}`](#{_anchor(spec.schema_id)})"
        out.append(
            f"| `{spec.type}` | {spec.version} | {link} | {f'`{spec.topic}`' if spec.topic else 'partner topics'} "
            f"| {', '.join(prod) or _nobody(spec, consumers=False)} | {', '.join(cons) or _nobody(spec, consumers=True)} |"
        )
    out += ["", "## Events", ""]
    for spec in specs:
        mid = _message_id(spec)
        schema = schemas[spec.schema_id]
        out += [
            f"### `{spec.schema_id}`",
            "",
            _cell(spec.description),
            "",
            f"- type `{spec.type}`, version {spec.version} ({_status(spec)})",
            f"- topic: {f'`{spec.topic}`' if spec.topic else 'chosen per record (partner topics)'}",
            f"- key: {_key(schema)}",
            f"- dataschema: `{spec.dataschema}` ([JSON Schema](../contracts/schemas/{spec.schema_id}.json))",
            *_uses_list("produced by", produced.get(mid, []), _nobody(spec, consumers=False)),
            *_uses_list("consumed by", consumed.get(mid, []), _nobody(spec, consumers=True)),
            "",
            *_fields(schema),
            "",
        ]
    out += [*_upcasting(), "", *_shared_types(schemas.values())]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"rewrite {CATALOGUE.name}")
    mode.add_argument("--check", action="store_true", help=f"fail if the committed {CATALOGUE.name} is stale")
    args = parser.parse_args(argv)
    text = render()
    where = CATALOGUE.relative_to(CATALOGUE.parents[1])
    if args.check:
        if not CATALOGUE.exists() or CATALOGUE.read_text() != text:
            print(f"{where} is stale: run `python -m contracts.catalogue --write`")
            return 1
        print(f"{where} is up to date")
        return 0
    CATALOGUE.write_text(text)
    print(f"wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
