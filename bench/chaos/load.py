"""Steady mixed load for a fault scenario, built on the end-to-end bench's driver (bench/e2e.py, bench/_load.py, bench/_partner.py).

- **Referrals** at `rate`/s (default 30), open-loop (`bench._load.drive`), cycling through the scenario's clients; each
  client's referrals all go to one partner (the e2e bench's need for client i is i mod 3), a few seconds apart, so
  a reordering in a partner inbox is visible per client.
- **Partner answers**: the partner processes of bench/_partner.py (Caritas, AWO, KI) open and accept every referral
  as their own Kafka principals; the acceptances flow back to intake and trigger e-mails to the Jobcenter.
- **Consents**: about one new consent per second for the scenario's clients (`POST /v1/consents`).
- **Deadlines**: about one deadline per second (`POST /v1/clients/{id}/deadlines`, residence title expiry).
- **Withdrawals**: a tenth of the clients withdraw every consent a third into the scenario; their referrals keep
  coming and must not reach an inbox from then on.

Every request answered 2xx is written to the ledger (`Accepted`), which the checker compares with what landed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import e2e
from bench._load import HttpPool, drive
from lotse_kit.settings import service_url


@dataclass(frozen=True)
class Accepted:
    """One HTTP request Lotse accepted (2xx): what the checker looks for in the audit log."""

    kind: str  # referral | consent | withdrawal | deadline
    id: str  # referral_id, consent_id, deadline_id
    client_id: str
    at: float  # epoch seconds of the response
    sent: float = 0.0  # epoch seconds the request was due (sent); two requests whose [sent, at] overlap have no order


@dataclass
class Ledger:
    accepted: list[Accepted] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # "kind: reason" -> count (not accepted: not checked)
    withdrawn_clients: dict[str, float] = field(default_factory=dict)  # client -> epoch seconds the withdrawal was answered

    def refuse(self, kind: str, reason: str) -> None:
        key = f"{kind}: {reason}"[:160]
        self.refused[key] = self.refused.get(key, 0) + 1

    def count(self, kind: str | None = None) -> int:
        return sum(1 for a in self.accepted if kind is None or a.kind == kind)


class Partners:
    """The partner processes (bench/_partner.py): started once for the suite, they answer whatever reaches an inbox."""

    def __init__(self, log_dir: Path) -> None:
        import sys

        self.reporters = e2e.Reporters("partners", [[sys.executable, "-m", "bench._partner", "--org", o] for o in e2e.PARTNERS], log_dir)

    async def start(self) -> None:
        await self.reporters.start()

    def alive(self) -> bool:
        return self.reporters.alive()

    async def stop(self) -> None:
        await self.reporters.stop()


class Load:
    """The mixed load of one scenario."""

    def __init__(self, rate: float, clients: int, token: e2e.CaseworkerToken) -> None:
        self.rate, self.n_clients, self.token = rate, clients, token
        self.clients: list[str] = []
        self.ledger = Ledger()
        self.run = uuid.uuid4().hex[:8]
        self._headers: dict[str, str] = {}

    async def prepare(self) -> None:
        """Fresh clients with consents for this scenario (a withdrawn client stays withdrawn)."""
        self.clients = await e2e.prepare_clients(self.n_clients, self.run, await self.token.fresh())

    async def _refresh_token(self) -> None:
        while True:
            token = await self.token.fresh(max_age_s=90)
            self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            await asyncio.sleep(10)

    async def run_for(self, seconds: float) -> None:
        """Offers the load for `seconds`; returns once every request has been answered (or timed out)."""
        self._headers = {"Authorization": f"Bearer {await self.token.fresh(max_age_s=90)}", "Content-Type": "application/json"}
        refresher = asyncio.create_task(self._refresh_token())
        side = asyncio.create_task(self._side_requests(seconds))
        try:
            await self._referrals(seconds)
            await side
        finally:
            refresher.cancel()
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def _referrals(self, seconds: float) -> None:
        pool = HttpPool("127.0.0.1", e2e_port("intake"), size=128)
        needs = list(e2e.NEEDS)
        body_by_need = {n: orjson.dumps({"need": n, "categories": e2e.CATEGORIES, "reason": "Fault suite referral"}) for n in needs}

        def make(i: int) -> tuple[str, bytes, dict[str, str]]:
            c = i % len(self.clients)
            return f"/v1/clients/{self.clients[c]}/referrals", body_by_need[needs[c % 3]], self._headers

        try:
            sched = await drive(pool, self.rate, seconds, make, timeout_s=30.0)
        finally:
            await pool.close()
        for s in sched.sent:
            client = self.clients[s.i % len(self.clients)]
            if s.status == 201:
                self.ledger.accepted.append(
                    Accepted("referral", json.loads(s.body)["referral_id"], client, s.done_wall or time.time(), s.due_wall)
                )
            else:
                self.ledger.refuse("referral", s.error or f"HTTP {s.status}")

    async def _side_requests(self, seconds: float) -> None:
        """Consents and deadlines about once a second each; the withdrawals a third into the scenario."""
        end = time.monotonic() + seconds
        withdraw_at = time.monotonic() + seconds / 3
        withdrawing = self.clients[:: max(1, len(self.clients) // max(1, len(self.clients) // 10))][: max(1, len(self.clients) // 10)]
        others = [c for c in self.clients if c not in withdrawing]
        withdrawn = False
        k = 0
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < end:
                tick = time.monotonic()
                client = others[k % len(others)]
                await asyncio.gather(self._consent(http, client), self._deadline(http, client, k))
                if not withdrawn and time.monotonic() >= withdraw_at:
                    withdrawn = True
                    await asyncio.gather(*(self._withdraw_all(http, c) for c in withdrawing))
                k += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    async def _post(self, http: httpx.AsyncClient, kind: str, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            r = await http.post(url, headers=self._headers, json=body)
        except httpx.HTTPError as exc:
            self.ledger.refuse(kind, type(exc).__name__)
            return None
        if r.status_code // 100 != 2:
            self.ledger.refuse(kind, f"HTTP {r.status_code}")
            return None
        out: dict[str, Any] = r.json()
        return out

    async def _consent(self, http: httpx.AsyncClient, client: str) -> None:
        got = await self._post(
            http,
            "consent",
            f"{service_url('consent')}/v1/consents",
            {
                "client_id": client,
                "form": "written",
                "information": e2e.INFO,
                "recipients": [*e2e.PARTNERS, e2e.SENDER],
                "purposes": ["referral", "contact_for_notifications"],
                "categories": e2e.CATEGORIES,
                "information_language": "de",
            },
        )
        if got is not None:
            self.ledger.accepted.append(Accepted("consent", str(got["consent_id"]), client, time.time()))

    async def _deadline(self, http: httpx.AsyncClient, client: str, k: int) -> None:
        due = (date.today() + timedelta(days=30 + k % 60)).isoformat()
        got = await self._post(
            http, "deadline", f"{service_url('intake')}/v1/clients/{client}/deadlines", {"kind": "residence_title_expiry", "due_date": due}
        )
        if got is not None:
            self.ledger.accepted.append(Accepted("deadline", str(got["deadline_id"]), client, time.time()))

    async def _withdraw_all(self, http: httpx.AsyncClient, client: str) -> None:
        try:
            r = await http.get(f"{service_url('consent')}/v1/clients/{client}/consents", headers=self._headers)
            consents = r.json() if r.status_code == 200 else []
        except httpx.HTTPError:
            consents = []
        if not consents:
            self.ledger.refuse("withdrawal", "could not list the client's consents")
            return
        for c in consents:
            if c.get("status") not in (None, "active"):
                continue
            got = await self._post(http, "withdrawal", f"{service_url('consent')}/v1/consents/{c['consent_id']}/withdraw", {})
            if got is not None:
                self.ledger.accepted.append(Accepted("withdrawal", str(c["consent_id"]), client, time.time()))
                self.ledger.withdrawn_clients[client] = time.time()


def e2e_port(service: str) -> int:
    return int(service_url(service).rsplit(":", 1)[1])


def add_load_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rate", type=float, default=30.0, help="referrals per second (default 30)")
    ap.add_argument("--clients", type=int, default=60, help="clients per scenario (each gets a referral every clients/rate seconds)")
