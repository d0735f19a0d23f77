"""The kit's pure parts: one clock, one backoff, the periodic worker, the directory policy, problems, i18n, declarations."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po
from fastapi import APIRouter, FastAPI

from contracts import new_event
from contracts.events import ClientRegistered
from lotse_kit import auth, errors, i18n, problems
from lotse_kit.clock import ManualClock, SystemClock
from lotse_kit.context import Ctx
from lotse_kit.declaration import PARTNER_INBOX, Publication, ServiceDeclaration, Subscription, channel_regex
from lotse_kit.network import NetworkConfigError, OrgDirectory
from lotse_kit.retry import backoff
from lotse_kit.workers import periodic

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "network.yaml"


# ---------------------------------------------------------------- clock and backoff
def test_manual_clock_moves_only_when_told():
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.now() == start
    clock.advance(days=2)
    assert clock.now() == start + timedelta(days=2)
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 3, 1))
    assert SystemClock().now().tzinfo is not None


def test_backoff_doubles_is_capped_and_jittered_downwards_only():
    top = [backoff(n, 0.5, 30.0, rng=lambda lo, hi: hi) for n in range(1, 9)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    low = [backoff(n, 0.5, 30.0, rng=lambda lo, hi: lo) for n in range(1, 4)]
    assert low == [0.25, 0.5, 1.0]
    assert backoff(10_000, 0.5, 30.0) <= 30.0  # no float overflow after a very long outage
    with pytest.raises(ValueError, match="1-based"):
        backoff(0, 1, 2)


# ---------------------------------------------------------------- periodic worker
async def test_periodic_worker_drains_survives_failures_and_stops_promptly():
    calls: list[str] = []
    results = iter([True, True, False, "boom", OSError("db away"), False])

    async def step() -> bool:
        r = next(results, False)
        calls.append(repr(r))
        if r == "boom":
            raise RuntimeError("a bug")
        if isinstance(r, Exception):
            raise r
        return bool(r)

    worker = periodic("test", step, interval_s=0.05, retry_base_s=0.01, retry_max_s=0.02, unhealthy_after=2)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker(stopping))
    deadline = time.monotonic() + 5
    while len(calls) < 7 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Three at once (two full batches, then an empty one), a crash and a transient error retried, then on schedule.
    assert calls[:6] == ["True", "True", "False", "'boom'", "OSError('db away')", "False"]
    assert worker.failures == 0 and worker.health() == "up"
    stopping.set()
    await asyncio.wait_for(task, timeout=1)


async def test_periodic_worker_reports_down_after_repeated_failures():
    async def step() -> bool:
        raise RuntimeError("always")

    worker = periodic("failing", step, interval_s=1, retry_base_s=0.001, retry_max_s=0.002, unhealthy_after=3)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker(stopping))
    while worker.failures < 3:
        await asyncio.sleep(0.005)
    assert worker.health().startswith("down: ")
    stopping.set()
    await asyncio.wait_for(task, timeout=1)


# ---------------------------------------------------------------- the directory policy
def test_directory_refuses_to_start_on_a_missing_or_broken_file(tmp_path):
    with pytest.raises(NetworkConfigError, match="cannot read"):
        OrgDirectory.from_file(tmp_path / "absent.yaml")
    broken = tmp_path / "network.yaml"
    broken.write_text("version: 1\norganisations: []\n")
    with pytest.raises(NetworkConfigError, match="organisations"):
        OrgDirectory.from_file(broken)


def test_directory_reloads_changes_and_keeps_the_last_good_version_of_a_broken_edit(tmp_path, caplog):
    path = tmp_path / "network.yaml"
    text = DEMO.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    d = OrgDirectory.from_file(path, check_interval_s=0)
    assert d.has("caritas-paderborn") and d.stale is None

    def touch(content: str) -> None:
        path.write_text(content, encoding="utf-8")
        st = path.stat()
        os.utime(path, (st.st_atime, st.st_mtime + 5))  # a new mtime even on coarse clocks

    touch(text.replace("caritas-paderborn", "caritas-hoexter"))
    assert d.has("caritas-hoexter") and not d.has("caritas-paderborn")

    with caplog.at_level(logging.ERROR, logger="lotse_kit.network"):
        touch("version: 1\norganisations: [\n")
        assert d.has("caritas-hoexter")  # the last good version stays in force
    assert d.stale and "syntax" in d.stale
    assert d.health().startswith("up: ")
    assert any("keeping the last good version" in r.getMessage() for r in caplog.records)

    touch(text)
    assert d.has("caritas-paderborn") and d.stale is None and d.health() == "up"


# ---------------------------------------------------------------- problems
class _ConsentMissing(errors.Conflict):
    title = "Consent required"
    type = "urn:lotse:problem:consent-required"


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)
    r = APIRouter()

    @r.get("/refused")
    async def refused() -> None:
        raise _ConsentMissing("no consent for health data", missing_categories=["health"])

    @r.get("/bug")
    async def bug() -> None:
        raise ZeroDivisionError("oops")

    @r.get("/items/{n}")
    async def item(n: int) -> dict[str, int]:
        return {"n": n}

    app.include_router(r)
    return app


async def test_domain_errors_map_to_problem_json_once_and_a_bug_gets_an_error_id(caplog):
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.get("/refused")
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert r.json() == {
            "type": "urn:lotse:problem:consent-required",
            "title": "Consent required",
            "status": 409,
            "detail": "no consent for health data",
            "instance": "/refused",
            "missing_categories": ["health"],
        }

        with caplog.at_level(logging.ERROR, logger="lotse_kit.problems"):
            r = await http.get("/bug")
        body = r.json()
        assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
        assert body["type"] == "urn:lotse:problem:internal" and uuid.UUID(body["error_id"])
        assert [rec.error_id for rec in caplog.records if rec.getMessage() == "unhandled error"] == [body["error_id"]]

        r = await http.get("/items/x")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "n"
        r = await http.get("/nowhere")
        assert r.status_code == 404 and r.json()["type"] == "urn:lotse:problem:not-found"


# ---------------------------------------------------------------- i18n
def test_language_choice_and_direction():
    assert i18n.choose_language("uk-UA", ["ar"]) == "uk"
    assert i18n.choose_language(None, ["ti", "ar"]) == "ar"
    assert i18n.choose_language("ti", ["so"]) == "en"
    assert i18n.choose_language("ti", supported=("de", "fa")) == "de"
    assert [i18n.direction(lang) for lang in ("ar", "fa", "uk", "de")] == ["rtl", "rtl", "ltr", "ltr"]


def _write_catalogue(root: Path, lang: str, entries: dict[str, str]) -> None:
    cat = Catalog(locale=lang)
    for msgid, msgstr in entries.items():
        cat.add(msgid, msgstr, flags=["python-format"] if "%(" in msgid else [])
    path = root / lang / "LC_MESSAGES" / "messages.po"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        write_po(f, cat)


def test_catalogue_check_names_missing_messages_and_placeholder_differences(tmp_path):
    template = Catalog()
    template.add("Hello %(name)s")
    template.add("Goodbye")
    _write_catalogue(tmp_path, "de", {"Hello %(name)s": "Hallo %(name)s", "Goodbye": "Tschüss"})
    _write_catalogue(tmp_path, "ar", {"Hello %(name)s": "مرحبا %(nom)s"})
    cat = i18n.Catalogue(tmp_path, languages=("de", "ar"))
    found = {(p.language, p.msgid, p.problem.split()[0]) for p in i18n.check_catalogue(cat, template)}
    assert found == {("ar", "Hello %(name)s", "placeholders"), ("ar", "Goodbye", "missing")}
    assert cat.gettext("de", "Hello %(name)s", name="Olena") == "Hallo Olena"
    env = cat.jinja_env("de")
    assert env.from_string('{{ _("Hello %(name)s", name=n) }} {{ dir }}').render(n="<b>") == "Hallo <b> ltr"


# ---------------------------------------------------------------- declarations
def test_declarations_match_templated_channels_and_refuse_unknown_types():
    assert channel_regex(PARTNER_INBOX).match("partner.caritas-paderborn.inbox.v1")
    assert not channel_regex(PARTNER_INBOX).match("partner.caritas-paderborn.inbox.v1.dlq")
    decl = ServiceDeclaration("x", "X", "x", publications=(Publication(PARTNER_INBOX, ("lotse.client.registered",)),))
    env = new_event(
        ClientRegistered(
            client_id=uuid.uuid4(),
            registering_org="a-org",
            responsible_org="a-org",
            preferred_language="uk",
            registered_at=datetime.now(UTC),
        ),
        source="/lotse/x",
    )
    assert decl.may_publish("partner.awo-paderborn.inbox.v1", env)
    assert not decl.may_publish("lotse.clients.v1", env)
    with pytest.raises(ValueError, match="unknown event types"):
        Subscription("s", channels=("lotse.clients.v1",), handlers={"lotse.client.exploded": None})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="unknown messages"):
        Publication("lotse.clients.v1", ("lotse.client.exploded",))


# ---------------------------------------------------------------- the acting organisation comes from the token
def _ctx_app(verifier: Any) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    auth.install(app, verifier)

    @app.get("/who")
    async def who(ctx: Ctx) -> dict[str, str]:
        return {"org": ctx.acting_org, "actor": ctx.actor}

    return app


async def test_the_acting_organisation_is_the_tokens_and_a_header_cannot_name_another():
    signer = auth.LocalSigner()
    transport = httpx.ASGITransport(app=_ctx_app(signer.verifier()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        caseworker = {"Authorization": "Bearer " + signer.token(subject="m.mueller", org="caritas-paderborn", roles=["caseworker"])}
        r = await http.get("/who", headers=caseworker)
        assert r.json() == {"org": "caritas-paderborn", "actor": "m.mueller"}
        # Neither the old header nor the service delegation header changes who acts for a person's token.
        r = await http.get(
            "/who", headers={**caseworker, "X-Lotse-Org": "jobcenter-kreis-paderborn", "Lotse-On-Behalf-Of": "awo-kreis-paderborn"}
        )
        assert r.json()["org"] == "caritas-paderborn"
        # A service acts for the organisation it names; without one it acts for none.
        service = {"Authorization": "Bearer " + signer.token(subject="service-account-lotse-notifications", service="notifications")}
        r = await http.get("/who", headers={**service, "Lotse-On-Behalf-Of": "awo-kreis-paderborn"})
        assert r.json() == {"org": "awo-kreis-paderborn", "actor": "service-account-lotse-notifications"}
        r = await http.get("/who", headers=service)
        assert r.status_code == 403 and r.json()["type"] == "urn:lotse:problem:no-acting-org"
        r = await http.get("/who", headers={"X-Lotse-Org": "caritas-paderborn"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_service_logs_leave_out_the_http_clients_per_request_lines(capsys):
    """httpx logs every call between services at INFO, URL and query included (client ids), several per
    referral; our own lines say what happened. Warnings still come through."""
    import logging

    from lotse_kit.logging import configure

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("kittest", "INFO")
        logging.getLogger("httpx").info('HTTP Request: GET http://127.0.0.1:8001/internal/v1/clients/x "HTTP/1.1 200 OK"')
        logging.getLogger("httpx").warning("connection pool exhausted")
        logging.getLogger("lotse_kit.consumer").info("event processed")
        out = capsys.readouterr().out
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert "HTTP Request" not in out
    assert "connection pool exhausted" in out and "event processed" in out
