"""Network faults between the services and the three-node cluster's brokers (scenario 6), through toxiproxy.

`deploy/local/cluster.sh up` starts one toxiproxy process with a pass-through proxy per node (`kafka-node-1..3`,
listening on the client ports 39092-39094 that every credentials file's bootstrap names; each node advertises its
proxy's port, so clients stay behind the proxy after every metadata update). Replication between the brokers and
the controllers' quorum do not pass through it: a fault here is between clients and brokers only.

`tc netem` would degrade packets; a TCP proxy degrades a byte stream, so the knobs mean:

- **delay_ms / jitter_ms**: every chunk of data is held for `delay_ms` ± `jitter_ms` in *each* direction, so a
  request/response round trip (produce → ack, fetch → records) takes at least `2 * (delay_ms - jitter_ms)` longer.
- **loss**: TCP does not lose bytes; it retransmits, which shows up as delay (use `delay_ms`), and under heavy
  loss a connection breaks. `loss` is that breakage: the fraction of connections, drawn independently for each
  connection that is open when the fault starts and for each one opened while it lasts, that the proxy breaks at
  their next request. `loss_mode="reset"` (default) closes them with a TCP reset (the client sees the error at
  once and reconnects); `loss_mode="stall"` swallows their data for `stall_ms` and then closes them (a black
  hole: the client notices only through its request timeout). Connections not drawn are untouched; `loss=1.0`
  breaks every connection, so no request gets through until `heal()`.

`heal()` removes every fault at once; connections broken meanwhile stay broken (the clients reconnect).

    async with NetFault() as net:          # start(): the proxies are there, and pass everything through
        await net.degrade(delay_ms=200, jitter_ms=50, loss=0.1)
        await asyncio.sleep(10)
        await net.heal()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import httpx

DEFAULT_API_PORT = 39474  # deploy/local/cluster.sh: LOTSE_CLUSTER_PROXY_API_PORT
PROXY_PREFIX = "kafka-node-"
LossMode = Literal["reset", "stall"]


class NetFaultError(RuntimeError):
    """The proxy is not there, or refused a change."""


def default_api() -> str:
    return f"http://127.0.0.1:{os.environ.get('LOTSE_CLUSTER_PROXY_API_PORT', DEFAULT_API_PORT)}"


class NetFault:
    """Degrades and heals the connections from clients to the cluster's brokers.

    `proxies`: the proxy names to act on; all `kafka-node-*` proxies by default (one per node)."""

    def __init__(self, api: str | None = None, proxies: Sequence[str] | None = None, *, timeout: float = 10.0) -> None:
        self.api = (api or default_api()).rstrip("/")
        self._wanted = list(proxies) if proxies is not None else None
        self.proxies: list[str] = []
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self.degraded = False

    async def __aenter__(self) -> NetFault:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Finds the proxies and leaves them passing everything through (a fault left by a crashed run is removed)."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.api, timeout=self._timeout)
        try:
            r = await self._http.get("/proxies")
        except httpx.HTTPError as exc:
            raise NetFaultError(f"no fault proxy answers at {self.api} ({exc!r}); run deploy/local/cluster.sh up") from None
        self._check(r, "list the proxies")
        present: dict[str, Any] = r.json()
        names = self._wanted if self._wanted is not None else sorted(n for n in present if n.startswith(PROXY_PREFIX))
        missing = [n for n in names if n not in present]
        if missing or not names:
            raise NetFaultError(f"proxies {missing or names} missing at {self.api}; run deploy/local/cluster.sh up")
        disabled = [n for n in names if not present[n].get("enabled", True)]
        if disabled:
            raise NetFaultError(f"proxies {disabled} are disabled; deploy/local/cluster.sh proxy-up enables them")
        self.proxies = names
        await self.heal()

    async def stop(self) -> None:
        """Heals and lets go of the proxy API (the proxies themselves keep running with the cluster)."""
        if self._http is None:
            return
        try:
            await self.heal()
        finally:
            await self._http.aclose()
            self._http = None

    # --------------------------------------------------------------------- faults
    async def degrade(
        self,
        delay_ms: float,
        jitter_ms: float = 0,
        loss: float = 0.0,
        *,
        loss_mode: LossMode = "reset",
        stall_ms: int = 5000,
    ) -> None:
        """Replaces whatever fault is on with this one (see the module's text for what the knobs mean)."""
        if delay_ms < 0 or jitter_ms < 0 or not 0.0 <= loss <= 1.0 or stall_ms < 0:
            raise ValueError("delay_ms, jitter_ms and stall_ms must be >= 0 and loss within [0, 1]")
        if loss_mode not in ("reset", "stall"):
            raise ValueError(f"loss_mode must be 'reset' or 'stall', not {loss_mode!r}")
        toxics: list[dict[str, Any]] = []
        if delay_ms > 0 or jitter_ms > 0:
            for stream in ("upstream", "downstream"):
                toxics.append(
                    {
                        "name": f"lotse-delay-{stream}",
                        "type": "latency",
                        "stream": stream,
                        "toxicity": 1.0,
                        "attributes": {"latency": round(delay_ms), "jitter": round(jitter_ms)},
                    }
                )
        if loss > 0:
            # Upstream: a connection drawn breaks at the client's next request.
            kind, attrs = ("reset_peer", {"timeout": 0}) if loss_mode == "reset" else ("timeout", {"timeout": stall_ms})
            toxics.append({"name": f"lotse-loss-{loss_mode}", "type": kind, "stream": "upstream", "toxicity": loss, "attributes": attrs})
        await self.heal()
        for name in self.proxies:
            for toxic in toxics:
                r = await self._client().post(f"/proxies/{name}/toxics", json=toxic)
                self._check(r, f"add {toxic['name']} to {name}")
        self.degraded = bool(toxics)

    async def heal(self) -> None:
        """Removes every fault from the proxies; data flows as before at once."""
        http = self._client()
        for name in self.proxies:
            r = await http.get(f"/proxies/{name}/toxics")
            self._check(r, f"list the toxics of {name}")
            for toxic in r.json():
                d = await http.delete(f"/proxies/{name}/toxics/{toxic['name']}")
                if d.status_code != 404:  # removed meanwhile is fine
                    self._check(d, f"remove {toxic['name']} from {name}")
        self.degraded = False

    async def faults(self) -> dict[str, list[dict[str, Any]]]:
        """What is on now, per proxy (toxiproxy's toxic descriptions), e.g. for a scenario's record."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in self.proxies:
            r = await self._client().get(f"/proxies/{name}/toxics")
            self._check(r, f"list the toxics of {name}")
            out[name] = r.json()
        return out

    # -------------------------------------------------------------------- helpers
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise NetFaultError("NetFault is not started: await start() first (or use `async with`)")
        return self._http

    @staticmethod
    def _check(r: httpx.Response, what: str) -> None:
        if r.status_code >= 300:
            raise NetFaultError(f"the fault proxy refused to {what}: {r.status_code} {r.text[:200]}")
