"""Changing one byte of one stored entry (as a superuser, triggers disabled) is detected: by
`lotse audit verify`, by the independent RFC 9162 verifier and in the subject report."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from contracts import new_event, topics
from contracts.events import ClientRegistered
from lotse_kit.kafka import ensure_topics
from services.audit.bootstrap import bootstrap
from services.audit.cli import app as cli
from services.audit.domain.commands import SignTreeHead
from services.audit.handlers import handle
from services.audit.tests import rfc9162
from services.audit.tests.conftest import AUDITOR, DIRECTORY, DPO, ORG, fast_settings, now
from tests.fixtures import as_org, serving
from tests.kafka_helpers import eventually, produce_raw

runner = CliRunner()


def registered(client_id):
    return new_event(
        ClientRegistered(client_id=client_id, registering_org=ORG, responsible_org=ORG, preferred_language="tr", registered_at=now()),
        source="/lotse/intake",
        acting_org=ORG,
    )


async def export_to(audit, path, fmt="ndjson"):
    r = await audit.http.get("/v1/audit/export", params={"format": fmt}, headers=AUDITOR)
    assert r.status_code == 200
    path.write_bytes(r.content)


def run_cli(*args) -> tuple[int, str]:
    result = runner.invoke(cli, ["verify", *map(str, args)])
    return result.exit_code, result.stdout


async def superuser_change(admin_db, schema: str, sql: str, *args) -> None:
    async with admin_db.transaction():
        await admin_db.execute("SET LOCAL session_replication_role = replica")  # ordinary triggers do not fire
        await admin_db.execute(sql, *args)


async def test_one_changed_byte_is_detected(audit, admin_db, tmp_path):
    client = uuid.uuid4()
    await audit.produce(topics.CLIENTS, *[registered(client) for _ in range(9)])
    await audit.wait_for_size(9)
    head = await audit.sign()
    sth = tmp_path / "sth.json"
    sth.write_text(json.dumps(head))
    pub = tmp_path / "pub.pem"
    pub.write_bytes(audit.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))

    await export_to(audit, tmp_path / "good.ndjson")
    await export_to(audit, tmp_path / "good.csv", "csv")
    code, out = run_cli(tmp_path / "good.ndjson", "--tree-head", sth, "--public-key", pub)
    assert code == 0 and out.startswith("OK: 9 entries"), out
    code, out = run_cli(tmp_path / "good.csv", "--tree-head", sth, "--public-key", pub)
    assert code == 0 and out.startswith("OK: 9 entries"), out

    # A forged tree head (different size, same signature) is refused.
    forged = dict(head, tree_size=8)
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, out = run_cli(tmp_path / "good.ndjson", "--tree-head", tmp_path / "forged.json")
    assert code == 1 and "signature is invalid" in out

    # One byte of entry 4 changes, directly in the database.
    victim = 4
    original = bytes(await audit.pool.fetchval("SELECT entry FROM audit_log WHERE idx = $1", victim))
    pos = original.index(b'"kind":"event"') + len(b'"kind":"')
    await superuser_change(
        admin_db,
        audit.schema,
        f"UPDATE {audit.schema}.audit_log SET entry = set_byte(entry, $1, get_byte(entry, $1) # 1) WHERE idx = $2",
        pos,
        victim,
    )
    changed = bytes(await audit.pool.fetchval("SELECT entry FROM audit_log WHERE idx = $1", victim))
    assert sum(a != b for a, b in zip(original, changed, strict=True)) == 1

    await export_to(audit, tmp_path / "bad.ndjson")
    code, out = run_cli(tmp_path / "bad.ndjson", "--tree-head", sth, "--public-key", pub)
    assert code == 1 and out.startswith(f"FAILED: first bad index {victim}:"), out

    # The auditor's own check of the served entry against the signed root fails too.
    root = base64.b64decode(head["sha256_root_hash"])
    served = (await audit.http.get(f"/v1/audit/entries/{victim}", headers=AUDITOR)).json()
    proof = (await audit.http.get(f"/v1/audit/entries/{victim}/inclusion-proof", params={"tree_size": 9}, headers=AUDITOR)).json()
    path = [base64.b64decode(p) for p in proof["audit_path"]]
    assert not rfc9162.verify_inclusion(rfc9162.hash_leaf(base64.b64decode(served["entry_b64"])), victim, 9, path, root)
    # (the untouched neighbour still verifies)
    neighbour = (await audit.http.get("/v1/audit/entries/3", headers=AUDITOR)).json()
    npath = [
        base64.b64decode(p)
        for p in (await audit.http.get("/v1/audit/entries/3/inclusion-proof", params={"tree_size": 9}, headers=AUDITOR)).json()[
            "audit_path"
        ]
    ]
    assert rfc9162.verify_inclusion(rfc9162.hash_leaf(base64.b64decode(neighbour["entry_b64"])), 3, 9, npath, root)

    # The subject report names the entry it can no longer trust.
    report = (await audit.http.get(f"/v1/audit/subjects/{client}/report", headers=DPO)).json()
    assert report["tampered_entries"] == [victim] and report["entries_examined"] == 9

    # Rewriting the recorded leaf hash as well only moves the failure to the root.
    await superuser_change(
        admin_db, audit.schema, f"UPDATE {audit.schema}.audit_log SET leaf_hash = $1 WHERE idx = $2", rfc9162.hash_leaf(changed), victim
    )
    await export_to(audit, tmp_path / "worse.ndjson")
    code, out = run_cli(tmp_path / "worse.ndjson", "--tree-head", sth, "--public-key", pub)
    assert code == 1 and "is not the signed root" in out, out

    # A truncated export is caught at the first missing index.
    lines = (tmp_path / "good.ndjson").read_text().splitlines()
    (tmp_path / "gap.ndjson").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    code, out = run_cli(tmp_path / "gap.ndjson", "--tree-head", sth)
    assert code == 1 and out.startswith("FAILED: first bad index 2:"), out


async def test_cli_verifies_a_running_service_by_url(infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key):
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + topics.CLIENTS, partitions=1)])
    app = bootstrap(fast_settings(topic_namespace, tmp_path), schema=f"audit_{unique}", signing_key=signing_key, directory=DIRECTORY)
    async with serving(app) as url:
        await produce_raw(kafka_bootstrap, topic_namespace + topics.CLIENTS, [(None, b"junk", []) for _ in range(25)])
        deps = app.state.deps

        async def logged() -> bool:
            return await deps.repo.size() == 25

        await eventually(logged, timeout=40)
        await handle(SignTreeHead(), deps)
        raw = base64.b64encode(signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        token = as_org("datenschutz-kreis", "auditor")["Authorization"].removeprefix("Bearer ")
        result = await asyncio.to_thread(runner.invoke, cli, ["verify", "--url", url, "--public-key", raw, "--progress", "--token", token])
        assert result.exit_code == 0 and result.stdout.startswith("OK: 25 entries"), result.output
        result = await asyncio.to_thread(runner.invoke, cli, ["tree-head", "--url", url, "--token", token])
        assert json.loads(result.stdout)["tree_size"] == 25
        refused = await asyncio.to_thread(runner.invoke, cli, ["tree-head", "--url", url])
        assert refused.exit_code == 2 and "HTTP 401" in refused.output
