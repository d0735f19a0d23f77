"""Exports the contracts as committed files: one JSON Schema per event schema (current and older
versions) and one AsyncAPI 3.0 document per service, generated from the service's own declaration
(`services/<name>/entrypoints/consumers.py: DECLARATION`), so the documents say what the code does.

    python -m contracts.export          # rewrite the files
    python -m contracts.export --check  # exit 1 if a committed file is stale
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .events import EVENTS, SCHEMAS, EventSpec

if TYPE_CHECKING:
    from lotse_kit.declaration import ServiceDeclaration

HERE = Path(__file__).parent
SCHEMA_DIR = HERE / "schemas"
ASYNCAPI_DIR = HERE / "asyncapi"

# The services whose AsyncAPI documents are generated, each from its own declaration:
# `services/<name>/entrypoints/consumers.py: DECLARATION` (a lotse_kit.declaration.ServiceDeclaration).
SERVICES = ("intake", "consent", "notifications", "audit", "gateway")


class DeclarationMissing(Exception):
    """A service's declaration cannot be imported (or is not a ServiceDeclaration)."""


def declaration(service: str) -> ServiceDeclaration:
    """The service's own declaration of what it consumes and produces.

    Imported here, lazily, so that `contracts` as a library never imports a service.
    """
    from lotse_kit.declaration import ServiceDeclaration

    module_name = f"services.{service}.entrypoints.consumers"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an unfinished service must not hide the other exports
        raise DeclarationMissing(f"{module_name} cannot be imported: {exc!r}") from exc
    decl = getattr(module, "DECLARATION", None)
    if not isinstance(decl, ServiceDeclaration):
        raise DeclarationMissing(f"{module_name}.DECLARATION is not a ServiceDeclaration")
    if decl.service != service:
        raise DeclarationMissing(f"{module_name}.DECLARATION is for service {decl.service!r}")
    return decl


def spec_by_message_id(message_id: str) -> EventSpec:
    """The contract a declaration's message id names (see `lotse_kit.declaration.message_id`)."""
    if message_id in EVENTS:
        return EVENTS[message_id]
    for spec in SCHEMAS.values():
        if spec.schema_id == message_id:
            return spec
    raise KeyError(message_id)


def json_schema(spec: EventSpec) -> dict[str, Any]:
    schema = spec.model.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": spec.dataschema,
        "title": spec.type,
        "description": spec.description,
        "x-lotse-version": spec.version,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


_HEADERS_SCHEMA = {
    "type": "object",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema", "content-type"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "format": "uuid"},
        "ce_source": {"type": "string", "pattern": "^/(lotse/[a-z][a-z0-9-]*|partners/[a-z0-9][a-z0-9-]{1,62})$"},
        "ce_type": {"type": "string"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "format": "uuid", "description": "The pseudonymous client id, where there is one."},
        "ce_dataschema": {"type": "string"},
        "ce_actingorg": {"type": "string", "description": "The organisation on whose behalf the event was produced."},
        "ce_traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[0-9a-f-]*)?$",
            "description": "W3C Trace Context traceparent of the span that produced the event (CloudEvents distributed-tracing extension); optional.",
        },
        "ce_tracestate": {
            "type": "string",
            "maxLength": 512,
            "description": "W3C Trace Context tracestate belonging to ce_traceparent; optional.",
        },
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def _channel_id(address: str) -> str:
    return address.replace("{", "").replace("}", "").replace(".", "-")


def asyncapi(decl: ServiceDeclaration) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, from its declaration."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for action, by_channel in (("send", decl.produces()), ("receive", decl.consumes())):
        for address, message_ids in by_channel.items():
            if not message_ids:
                continue
            cid = _channel_id(address)
            channel = channels.setdefault(cid, {"address": address, "messages": {}})
            if "{orgId}" in address:
                channel["parameters"] = {"orgId": {"description": "Organisation id from the network configuration."}}
            for mid in message_ids:
                spec = spec_by_message_id(mid)
                messages[mid] = {
                    "name": spec.type,
                    "title": mid,
                    "summary": spec.description,
                    "contentType": "application/json",
                    "headers": _HEADERS_SCHEMA,
                    "payload": {"$ref": f"../schemas/{spec.schema_id}.json"},
                    "bindings": {"kafka": {"key": {"type": "string", "format": "uuid"}, "bindingVersion": "0.5.0"}},
                }
                channel["messages"][mid] = {"$ref": f"#/components/messages/{mid}"}
            operations[f"{action}-{cid}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{cid}"},
                "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"} for mid in message_ids],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": decl.title, "version": "1.0.0", "description": decl.description},
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "deploy/local stack"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered_schemas() -> dict[Path, str]:
    return {
        SCHEMA_DIR / f"{spec.schema_id}.json": json.dumps(json_schema(spec), indent=2, sort_keys=True) + "\n" for spec in SCHEMAS.values()
    }


def rendered_asyncapi() -> tuple[dict[Path, str], dict[Path, str]]:
    """Each service's AsyncAPI document, and (by document) why a service's declaration could not be read."""
    files: dict[Path, str] = {}
    missing: dict[Path, str] = {}
    for service in SERVICES:
        path = ASYNCAPI_DIR / f"{service}.yaml"
        try:
            files[path] = yaml.safe_dump(asyncapi(declaration(service)), sort_keys=False, allow_unicode=True, width=120)
        except DeclarationMissing as exc:
            missing[path] = str(exc)
    return files, missing


def stale_files() -> list[str]:
    """Files that differ from what the models and declarations produce, committed files nothing produces,
    and documents that cannot be checked because their service's declaration cannot be read."""
    asyncapi_files, missing = rendered_asyncapi()
    files = {**rendered_schemas(), **asyncapi_files}
    stale = [str(p.relative_to(HERE)) for p, text in files.items() if not p.exists() or p.read_text() != text]
    stale += [f"{p.relative_to(HERE)} (no declaration: {why})" for p, why in missing.items()]
    for d, pattern in ((SCHEMA_DIR, "*.json"), (ASYNCAPI_DIR, "*.yaml")):
        stale += [f"{p.relative_to(HERE)} (orphan)" for p in d.glob(pattern) if p not in files and p not in missing]
    return sorted(stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale contract exports (run `python -m contracts.export`):", *stale, sep="\n  ")
            return 1
        print("contract exports are up to date")
        return 0
    # Writes what can be generated; a service whose declaration cannot be read keeps its committed document.
    asyncapi_files, missing = rendered_asyncapi()
    files = {**rendered_schemas(), **asyncapi_files}
    for d, pattern in ((SCHEMA_DIR, "*.json"), (ASYNCAPI_DIR, "*.yaml")):
        d.mkdir(exist_ok=True)
        for p in d.glob(pattern):
            if p not in files and p not in missing:
                p.unlink()
    for path, text in files.items():
        path.write_text(text)
    print(f"wrote {len(files)} files")
    if missing:
        print("not generated (no declaration):", *(f"{p.relative_to(HERE)}: {why}" for p, why in missing.items()), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
