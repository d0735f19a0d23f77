"""Exports the contracts as committed files: one JSON Schema per event and one
AsyncAPI 3.0 document per service.

    python -m contracts.export          # rewrite the files
    python -m contracts.export --check  # exit 1 if a committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from . import topics
from .events import EVENTS, PARTNER_ANSWER_TYPES, PARTNER_REFERRAL, SCHEMAS, EventSpec

HERE = Path(__file__).parent
SCHEMA_DIR = HERE / "schemas"
ASYNCAPI_DIR = HERE / "asyncapi"

PARTNER_INBOX = "partner.{orgId}.inbox.v1"
PARTNER_OUTBOX = "partner.{orgId}.outbox.v1"

_ALL = list(EVENTS)
_REFERRAL_ANSWERS = list(PARTNER_ANSWER_TYPES)

# Which service sends and receives what, by channel address -> event types.
# The partner inbox's referral uses the partner schema (see PARTNER_REFERRAL).
SERVICES: dict[str, dict[str, Any]] = {
    "intake": {
        "title": "Lotse intake service",
        "description": "Client registry, referrals, process plans and deadlines. Owns the client's personal data.",
        "send": {
            topics.CLIENTS: ["lotse.client.registered", "lotse.client.updated", "lotse.case.handed_over", "lotse.client.erased"],
            topics.REFERRALS: ["lotse.referral.sent", *_REFERRAL_ANSWERS, "lotse.referral.revoked"],
            topics.DEADLINES: ["lotse.deadline.registered", "lotse.deadline.approaching", "lotse.deadline.missed", "lotse.deadline.resolved"],
            topics.DISCLOSURE_REQUESTS: ["lotse.disclosure.requested"],
        },
        "receive": {
            PARTNER_OUTBOX: _REFERRAL_ANSWERS,
            topics.DISCLOSURES: ["lotse.disclosure.made", "lotse.disclosure.blocked"],
        },
    },
    "consent": {
        "title": "Lotse consent service",
        "description": "Consent ledger, decision API and the only gate that writes personal data to partner topics.",
        "send": {
            topics.CONSENTS: ["lotse.consent.granted", "lotse.consent.withdrawn", "lotse.consent.expired"],
            topics.DISCLOSURES: ["lotse.disclosure.made", "lotse.disclosure.blocked"],
            PARTNER_INBOX: [PARTNER_REFERRAL.schema_id, *_REFERRAL_ANSWERS, "lotse.referral.revoked",
                            "lotse.deadline.approaching", "lotse.deadline.missed", "lotse.consent.withdrawn",
                            "lotse.consent.expired", "lotse.client.erased", "lotse.case.handed_over"],
        },
        "receive": {
            topics.DISCLOSURE_REQUESTS: ["lotse.disclosure.requested"],
            topics.REFERRALS: [*_REFERRAL_ANSWERS, "lotse.referral.revoked"],
            topics.DEADLINES: ["lotse.deadline.approaching", "lotse.deadline.missed"],
            topics.CLIENTS: ["lotse.client.erased", "lotse.case.handed_over"],
        },
    },
    "notifications": {
        "title": "Lotse notifications service",
        "description": "Multilingual e-mail, SMS and signed webhooks to clients, caseworkers and partner systems.",
        "send": {topics.NOTIFICATIONS: ["lotse.notification.delivered", "lotse.notification.failed"]},
        "receive": {
            topics.DEADLINES: ["lotse.deadline.approaching", "lotse.deadline.missed"],
            topics.REFERRALS: ["lotse.referral.sent", "lotse.referral.accepted", "lotse.referral.declined"],
            topics.CONSENTS: ["lotse.consent.granted", "lotse.consent.withdrawn"],
            topics.CLIENTS: ["lotse.case.handed_over"],
        },
    },
    "audit": {
        "title": "Lotse audit service",
        "description": "Tamper-evident (RFC 6962) log of every record on every lotse.*, partner.* and dead-letter topic.",
        "send": {},
        "receive": {
            **{t: [s for s in _ALL if EVENTS[s].topic == t] for t in (*topics.INTERNAL_TOPICS, topics.DISCLOSURE_REQUESTS)},
            PARTNER_INBOX: [PARTNER_REFERRAL.schema_id, *_REFERRAL_ANSWERS],
            PARTNER_OUTBOX: _REFERRAL_ANSWERS,
        },
    },
}


def _spec_by_id(message_id: str) -> EventSpec:
    for spec in SCHEMAS.values():
        if spec.schema_id == message_id or (spec.type == message_id and spec.schema_name is None):
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
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def _channel_id(address: str) -> str:
    return address.replace("{", "").replace("}", "").replace(".", "-")


def asyncapi(service: str) -> dict[str, Any]:
    desc = SERVICES[service]
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for action in ("send", "receive"):
        for address, message_ids in desc[action].items():
            cid = _channel_id(address)
            channel = channels.setdefault(cid, {"address": address, "messages": {}})
            if "{orgId}" in address:
                channel["parameters"] = {"orgId": {"description": "Organisation id from the network configuration."}}
            for mid in message_ids:
                spec = _spec_by_id(mid)
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
        "info": {"title": desc["title"], "version": "1.0.0", "description": desc["description"]},
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "deploy/local stack"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for spec in SCHEMAS.values():
        files[SCHEMA_DIR / f"{spec.schema_id}.json"] = json.dumps(json_schema(spec), indent=2, sort_keys=True) + "\n"
    for service in SERVICES:
        doc = yaml.safe_dump(asyncapi(service), sort_keys=False, allow_unicode=True, width=120)
        files[ASYNCAPI_DIR / f"{service}.yaml"] = doc
    return files


def stale_files() -> list[str]:
    """Files that differ from what the models produce, plus committed files no model produces."""
    files = rendered()
    stale = [str(p.relative_to(HERE)) for p, text in files.items() if not p.exists() or p.read_text() != text]
    for d, pattern in ((SCHEMA_DIR, "*.json"), (ASYNCAPI_DIR, "*.yaml")):
        stale += [str(p.relative_to(HERE)) + " (orphan)" for p in d.glob(pattern) if p not in files]
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
    files = rendered()
    for d, pattern in ((SCHEMA_DIR, "*.json"), (ASYNCAPI_DIR, "*.yaml")):
        d.mkdir(exist_ok=True)
        for p in d.glob(pattern):
            if p not in files:
                p.unlink()
    for path, text in files.items():
        path.write_text(text)
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
