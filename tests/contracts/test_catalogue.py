"""`docs/events.md` is generated from the contracts and the services' declarations, and kept up to date.

`python -m contracts.catalogue --check` (run next to `python -m contracts.export --check`) fails when the
committed file differs from what the code produces: these tests show it is up to date now, that a changed
declaration or a missing upcaster makes it stale, and that what it says about each event is what the
declarations say.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from contracts import catalogue
from contracts.events import EVENTS, PREVIOUS_VERSIONS, SCHEMAS
from contracts.export import SERVICES, declaration, spec_by_message_id
from contracts.upcasting import UPCASTERS
from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX, message_id


def section(text: str, schema_id: str) -> str:
    """The part of the catalogue about one schema, up to the next heading."""
    m = re.search(rf"^### `{re.escape(schema_id)}`\n(.*?)(?=^##)", text, re.S | re.M)
    assert m, f"no section for {schema_id}"
    return m.group(1)


def line(body: str, prefix: str) -> str:
    """The line starting with `prefix`, with the sub-list that follows it (producers, consumers)."""
    lines = body.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith(prefix.rstrip())]
    assert len(starts) == 1, f"expected one {prefix!r} line in {body!r}"
    block = [lines[starts[0]]]
    for ln in lines[starts[0] + 1 :]:
        if not ln.startswith("  - "):
            break
        block.append(ln)
    return "\n".join(block)


def test_committed_catalogue_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert catalogue.main(["--check"]) == 0, capsys.readouterr().out


def test_a_changed_declaration_makes_it_stale(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The notifications service stops consuming anything: its consumer group must vanish from the catalogue.
    module = importlib.import_module("services.notifications.entrypoints.consumers")
    monkeypatch.setattr(module, "DECLARATION", dataclasses.replace(module.DECLARATION, subscriptions=()))
    text = catalogue.render()
    assert "lotse-notifications-triggers" not in text
    assert "lotse-notifications-triggers" in catalogue.CATALOGUE.read_text()
    assert catalogue.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out


def test_a_missing_upcaster_makes_it_stale_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    old = PREVIOUS_VERSIONS[0]
    monkeypatch.delitem(UPCASTERS, (old.type, old.version))
    text = catalogue.render()
    assert f"v{old.version} → v{old.version + 1}: **no upcaster**" in text
    assert catalogue.main(["--check"]) == 1


def test_every_schema_has_a_section_with_its_topic_and_every_field() -> None:
    text = catalogue.render()
    for spec in SCHEMAS.values():
        body = section(text, spec.schema_id)
        topic = line(body, "- topic: ")
        assert (f"`{spec.topic}`" in topic) if spec.topic else ("partner topics" in topic)
        for field in spec.model.model_fields:
            assert f"| `{field}` |" in body, f"{spec.schema_id}: field {field} missing"


def test_producers_and_consumers_are_the_declarations() -> None:
    text = catalogue.render()
    for service in SERVICES:
        decl = declaration(service)
        for channel, mids in decl.produces().items():
            for mid in mids:
                produced = line(section(text, spec_by_message_id(mid).schema_id), "- produced by: ")
                assert f"{service} on `{channel}`" in produced
                if channel == PARTNER_INBOX:  # the partner reads its own inbox
                    assert f"partner systems on `{channel}`" in line(section(text, spec_by_message_id(mid).schema_id), "- consumed by: ")
        for sub in decl.subscriptions:
            group = f"lotse-{service}-{sub.name}"
            for channel, mids in sub.consumes().items():
                for mid in mids:
                    body = section(text, spec_by_message_id(mid).schema_id)
                    assert f"{service} on `{channel}` (group `{group}`)" in line(body, "- consumed by: ")
                    if channel == PARTNER_OUTBOX:  # what a service reads on a partner's outbox, the partner wrote
                        assert f"partner systems on `{channel}`" in line(body, "- produced by: ")


def test_older_versions_point_to_their_current_version() -> None:
    text = catalogue.render()
    for old in PREVIOUS_VERSIONS:
        current = EVENTS[old.type]
        assert message_id(old) == old.schema_id
        body = section(text, old.schema_id)
        assert f"read as `{current.schema_id}` (upcast)" in line(body, "- consumed by: ")
        step = UPCASTERS[(old.type, old.version)]
        assert f"`{old.type}`: v{old.version} → v{current.version}" in text
        assert f"`{step.__module__}.{step.__qualname__}`" in text
