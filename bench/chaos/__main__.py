"""The fault suite (issue 15): faults under steady load on the three-node cluster, then what was sent against what landed.

    make chaos                                            # brings up the cluster, runs the short profile
    make chaos CHAOS_ARGS="--profile full"                # by hand: longer load, 2 minutes of webhook failures
    .venv/bin/python -m bench.chaos --only broker-leader-kill,malformed-records

Needs the local stack (`make up`: PostgreSQL and Keycloak are shared) and the cluster (`make up-cluster`). For the
run the single-node services are stopped and the services are started against the cluster (their pid files and
logs in .run/chaos/services); at the end the cluster's services are stopped and the single-node ones started again
if they ran before. Scenarios (bench/chaos/scenarios.py) run one after the other, each with fresh clients under
the mixed load of bench/chaos/load.py; after each, once the system is quiet, bench/chaos/checker.py counts.

Prints one table (scenario, requests accepted, lost, duplicated, reordered, recovery time) and writes
bench/results/chaos-<UTC date and time>.json. Exits 1 if any scenario lost or duplicated an effect, disclosed
after a withdrawal, missed a malformed record, failed the Merkle check or did not recover within the stated time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import e2e
from bench._procs import machine
from bench.chaos import checker as chk
from bench.chaos.env import (
    CHAOS_DIR,
    ORIGINAL_ENVIRON,
    REPO,
    SERVICES_SH,
    Cluster,
    Postgres,
    Services,
    chaos_environ,
    ensure_database,
    run_script,
    single_node_services_running,
)
from bench.chaos.load import Load, Partners, add_load_arguments
from bench.chaos.scenarios import PROFILES, Context, Outcome, by_name, consumed_topics

RESULTS = REPO / "bench" / "results"


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


async def single_node_services(action: str) -> tuple[int, str]:
    """deploy/local/services.sh with the single-node stack's default environment (not the cluster's)."""
    env = dict(ORIGINAL_ENVIRON)  # as this process was started, before it pointed itself at the cluster
    proc = await asyncio.create_subprocess_exec(
        str(SERVICES_SH), action, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from lotse_kit.settings import KitSettings

    profile = PROFILES[args.profile]
    if args.ready_within:
        profile.ready_within_s = args.ready_within
    scenarios = by_name(args.only.split(",") if args.only else None)
    started = datetime.now(UTC)
    cluster, services, postgres = Cluster(), Services(), Postgres()
    for _ in range(args.cluster_wait):  # a node still starting (make up-cluster returns when each answers)
        rc, status = await run_script(REPO / "deploy" / "local" / "cluster.sh", "status", check=False)
        if rc == 0:
            break
        await asyncio.sleep(1)
    if rc != 0:
        raise SystemExit(f"the three-node cluster is not up:\n{status}\nStart it with `make up-cluster` (make chaos does).")
    # From here on this process and its children (partners, scripts) talk to the cluster and the suite's database.
    await ensure_database()
    os.environ.update(chaos_environ())
    log_dir = CHAOS_DIR / f"run-{started:%Y%m%dT%H%M%S}"
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    single_was_up = single_node_services_running()
    rows: list[dict[str, Any]] = []
    partners: Partners | None = None
    db = chk.Db(KitSettings().database_url)
    try:
        if single_was_up:
            log("stopping the single-node stack's services for the run (started again at the end)")
            await single_node_services("down")
        log("starting the services against the cluster ...")
        await services.up()
        await e2e.register_partner_keys()
        partners = Partners(log_dir)
        await partners.start()
        log(f"partners {', '.join(e2e.PARTNERS)} answer on the cluster")
        token = e2e.CaseworkerToken()
        checker = chk.Checker(db, consumed_topics())
        for sc in scenarios:
            why = sc.available(None)  # type: ignore[arg-type]
            if why:
                log(f"{sc.name}: skipped ({why})")
                rows.append({"scenario": sc.name, "title": sc.title, "skipped": why})
                continue
            try:
                rows.append(await run_one(sc, args, profile, services, cluster, postgres, token, checker, db))
            except Exception as exc:  # the suite goes on with the next scenario; the row says what broke
                log(f"  ERROR: {sc.name} could not be checked: {type(exc).__name__}: {exc}")
                rows.append({"scenario": sc.name, "title": sc.title, "error": f"{type(exc).__name__}: {exc}", "ok": False})
            if partners is not None and not partners.alive():
                raise RuntimeError(f"a partner process died; see {log_dir}")
    finally:
        with contextlib.suppress(Exception):
            await db.close()
        if partners is not None:
            await partners.stop()
        if not args.keep_services:
            log("stopping the services on the cluster")
            await services.down()
            if single_was_up:
                log("starting the single-node stack's services again")
                rc, out = await single_node_services("up")
                if rc != 0:
                    log(f"WARNING: deploy/local/services.sh up failed:\n{out[-1500:]}")
    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": vars(profile),
        "settings": {"rate": args.rate, "clients": args.clients, "only": args.only},
        "machine": machine(),
        "scenarios": rows,
        "ok": all(r.get("ok", True) for r in rows),
    }


async def run_one(
    sc: Any,
    args: argparse.Namespace,
    profile: Any,
    services: Services,
    cluster: Cluster,
    postgres: Postgres,
    token: e2e.CaseworkerToken,
    checker: chk.Checker,
    db: Any,
) -> dict[str, Any]:
    log(f"{sc.name}: {sc.title}")
    t0 = time.monotonic()
    took, down = await services.wait_ready(profile.ready_within_s)
    if took is None:
        # A scenario that failed half-way may have left a service down: start what is missing.
        # An instance that runs but stays unready (e.g. a relay that ended) is restarted: the operator's remedy.
        log(f"  WARNING: not every service is ready before the scenario: {down}; restarting those")
        for inst in services.instances():
            if inst.name in down:
                with contextlib.suppress(Exception):
                    await services.stop(inst)
                    await services.start(inst)
    load = Load(args.rate, args.clients, token)
    await load.prepare()
    marks = await checker.mark()
    ctx = Context(services, cluster, postgres, profile, load, log)
    error = None
    unready: dict[str, dict[str, Any]] = {}
    watch = asyncio.create_task(watch_readiness(services, unready))
    try:
        outcome = await sc.run(ctx)
    except Exception as exc:  # the scenario's own failure is a finding, and the checker still counts what landed
        error = f"{type(exc).__name__}: {exc}"
        log(f"  ERROR in the scenario: {error}")
        outcome = Outcome(None, {"error": error})
    await ctx.load_done()
    watch.cancel()
    outcome.notes["not_ready"] = unready
    if unready:
        log(
            "  not ready during the scenario: "
            + ", ".join(f"{k} ~{v['seconds']:.0f} s ({v['first_reason'][:120]})" for k, v in unready.items())
        )
    log(
        f"  load done: {load.ledger.count()} requests accepted ({', '.join(f'{k} {v}' for k, v in sorted(load.ledger.refused.items())) or 'none refused'})"
    )
    if outcome.webhook is not None and outcome.webhook.endpoint_id:
        caught_up = await checker.wait_webhooks(outcome.webhook.endpoint_id)
        if caught_up is not None and outcome.since_recovery is not None:
            caught_up = time.monotonic() - outcome.since_recovery
            log(f"  every webhook delivered {caught_up:.1f} s after the endpoint recovered")
            outcome.notes["webhooks_caught_up_s"] = round(caught_up, 1)
        elif caught_up is None:
            log("  webhooks still waiting to be delivered")
            outcome.notes["webhooks_caught_up_s"] = None
    waited = await checker.wait_quiet(load.ledger, marks)
    log(f"  quiet after {waited:.0f} s; checking ...")
    found = await checker.check(load.ledger, marks, outcome.injected, outcome.webhook)
    if outcome.cleanup is not None:
        with contextlib.suppress(Exception):
            await outcome.cleanup()
    recovered_in_time = outcome.recovery_s is not None and outcome.recovery_s <= profile.ready_within_s
    row = {
        "scenario": sc.name,
        "title": sc.title,
        **chk.to_json(found),
        "recovery_s": None if outcome.recovery_s is None else round(outcome.recovery_s, 1),
        "ready_within_s": profile.ready_within_s,
        "quiet_after_s": round(waited, 1),
        "seconds": round(time.monotonic() - t0, 1),
        "notes": outcome.notes,
        "error": error,
    }
    row["ok"] = found.ok and recovered_in_time and error is None
    log("  " + one_line(row))
    return row


async def watch_readiness(services: Services, out: dict[str, dict[str, Any]]) -> None:
    """Samples every instance's readiness once a second: per instance, about how long it was not ready and why first."""
    import httpx

    async with httpx.AsyncClient() as http:
        while True:
            t = time.monotonic()
            for name, why in (await services.not_ready(http)).items():
                e = out.setdefault(name, {"seconds": 0.0, "first_reason": why})
                e["seconds"] += 1.0
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))


def one_line(r: dict[str, Any]) -> str:
    return (
        f"accepted {r['accepted']}, lost {r['lost']}, duplicated {r['duplicated']} (copies {r['copies']}), reordered {r['reordered']}, "
        f"after withdrawal {r['after_withdrawal']}, malformed missing {r['malformed_missing']}/{r['malformed_injected']}, "
        f"Merkle {'ok' if r['merkle_ok'] else r['merkle']}, recovery {_f(r['recovery_s'])} s -> {'OK' if r['ok'] else 'FAILED'}"
    )


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def table(result: dict[str, Any]) -> str:
    out = [
        "| scenario | accepted | lost | duplicated | reordered | copies (same event id, deduplicated) | recovery s "
        "| longest not ready s | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["scenarios"]:
        if "skipped" in r:
            out.append(f"| {r['scenario']} | - | - | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        if "accepted" not in r:
            out.append(f"| {r['scenario']} | - | - | - | - | - | - | - | FAILED: {r.get('error')} |")
            continue
        verdict = "ok" if r["ok"] else "FAILED: " + ", ".join(_why(r))
        out.append(
            f"| {r['scenario']} | {r['accepted']} | {r['lost']} | {r['duplicated']} | {r['reordered']} | {r['copies']} | {_f(r['recovery_s'])} "
            f"| {_f(longest_not_ready(r))} | {verdict} |"
        )
    return "\n".join(out)


def longest_not_ready(r: dict[str, Any]) -> float:
    """The longest time any instance was sampled not ready during the scenario (a killed instance included)."""
    return max((v["seconds"] for v in r.get("notes", {}).get("not_ready", {}).values()), default=0.0)


def _why(r: dict[str, Any]) -> list[str]:
    out = []
    for k in ("lost", "duplicated", "after_withdrawal", "malformed_missing", "malformed_without_reason"):
        if r.get(k):
            out.append(f"{k.replace('_', ' ')} {r[k]}")
    if r.get("merkle_ok") is False:
        out.append("Merkle: " + r["merkle"])
    if r.get("recovery_s") is None or r["recovery_s"] > r["ready_within_s"]:
        out.append(f"not ready within {r['ready_within_s']:.0f} s")
    if r.get("error"):
        out.append(r["error"])
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--only", help="comma-separated scenario names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--ready-within", type=float, help="the stated recovery bound in seconds (default: the profile's)")
    ap.add_argument("--keep-services", action="store_true", help="leave the services on the cluster running at the end")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cluster-wait", type=int, default=60, help="seconds to wait for every cluster node to answer")
    add_load_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        for sc in by_name(None):
            print(f"{sc.name:22} {sc.title}")
        return 0
    result = asyncio.run(run_suite(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chaos-{datetime.now(UTC):%Y-%m-%dT%H%M}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print()
    print(table(result))
    print()
    log(f"results: {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    sys.exit(main())
