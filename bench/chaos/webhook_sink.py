"""A partner's webhook endpoint for the fault suite (scenario 5: it answers 503 for a while, then 200).

**The process** (`python -m bench.chaos.webhook_sink --port P --state-dir DIR [--tls-cert PEM] [--down]`) receives
the notifications service's webhooks on `POST /hooks` (any path below it), verifies each one with the partner
kit (`lotse_partner.webhooks.verify`: the endpoint's `whsec_` secret and the service's `whpk_` public key, and that
`data.organisation` is the organisation it was registered for), records it, and answers:

- `401` if it does not verify (the service retries other 4xx too, as Standard Webhooks asks);
- `503` while switched *down*, `200` otherwise.

Every delivery attempt is one JSON line in `DIR/deliveries.jsonl` and in `GET /control/deliveries`: `webhook_id`
(the same for every attempt of one notification), `event_id` (the trigger event's id, `data.trigger_event_id`),
`notification_id`, `type`, `organisation`, `client_id` (pseudonymous), `arrived_at` (the sink's UTC clock),
`webhook_timestamp`, `status` (what the sink answered), `verified`, `reason` (why not). The control routes
(`/control/…`) need the bearer token from the environment variable `LOTSE_WEBHOOK_SINK_TOKEN`; the keys set
through them are kept in `DIR/keys.json` (0600), so a restarted sink still verifies.

**The helper** `WebhookSink` starts and stops that process, switches it down and up, reads the deliveries and
registers it as an organisation's webhook endpoint the way an operator would: the organisation's partner
system (its Keycloak user) calls `POST /v1/webhook-endpoints` of the notifications service, which answers with
the endpoint's secret once; the sink gets that secret and the published public key
(`GET /v1/webhooks/public-key`). Endpoints receive the organisation rows of the routing table that carry a
webhook (docs/notifications.md, *What triggers what*): `lotse.referral.sent|accepted|declined` for the referring
organisation (`from_org`), `lotse.deadline.approaching|missed` for `responsible_org`, `lotse.consent.withdrawn`
for each organisation in `disclosed_to`, `lotse.case.handed_over` for `to_org`.

The notifications service delivers only to public addresses over verified TLS unless told otherwise, so the
service the sink is registered with needs `WebhookSink.notifications_env()` in its environment: the sink's host
allow-listed (`LOTSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS`) and the local CA that issued the sink's certificate
trusted (`LOTSE_NOTIFICATIONS_WEBHOOK_CA_FILE`). The sink's certificate comes from the local stack's CA
(`.run/kafka/tls`, made by `deploy/local/stack.sh`; `lotse_kit.tls`) and names 127.0.0.1.

    sink = await start_sink(port=18600)    # WebhookSink(18600) + await sink.start()
    await sink.register("jobcenter-kreis-paderborn", event_types=["lotse.referral.sent"])
    await sink.down(); ...; await sink.up()
    per_event = Counter(d.event_id for d in await sink.deliveries() if d.status == 200)
    await sink.unregister(); await sink.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from lotse_partner.webhooks import WebhookVerificationError, verify

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))
DEFAULT_STATE_DIR = RUN / "chaos" / "webhook-sink"
LOCAL_CA_DIR = RUN / "kafka" / "tls"  # the local stack's CA (deploy/local/stack.sh: kafka_tls)
TOKEN_ENV = "LOTSE_WEBHOOK_SINK_TOKEN"
DEFAULT_PORT = 18600


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt as the sink saw it."""

    webhook_id: str
    event_id: str | None
    notification_id: str | None
    type: str | None
    organisation: str | None
    client_id: str | None
    arrived_at: str  # ISO 8601, UTC
    webhook_timestamp: str | None
    status: int
    verified: bool
    reason: str | None = None


# ================================================================== the process
class SinkState:
    def __init__(self, state_dir: Path, *, up: bool) -> None:
        self.dir = state_dir
        self.up = up
        self.keys: list[str] = []
        self.organisation: str | None = None
        self.deliveries: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()
        keys_file = state_dir / "keys.json"
        if keys_file.exists():
            saved = json.loads(keys_file.read_text())
            self.keys, self.organisation = list(saved["keys"]), saved.get("organisation")
        log = state_dir / "deliveries.jsonl"
        if log.exists():
            self.deliveries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def save_keys(self) -> None:
        path = self.dir / "keys.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": self.keys, "organisation": self.organisation}, f)
        tmp.replace(path)

    async def record(self, delivery: Delivery) -> None:
        line = asdict(delivery)
        async with self.lock:
            self.deliveries.append(line)
            with (self.dir / "deliveries.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")


def make_app(state: SinkState, token: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def hook(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        payload: dict[str, Any] = {}
        reason: str | None = None
        try:
            if not state.keys:
                raise WebhookVerificationError("invalid-key", "the sink has no keys yet (not registered)")
            payload = verify(state.keys, headers, body, expect_organisation=state.organisation)
        except WebhookVerificationError as exc:
            reason = f"{exc.reason}: {exc}"
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
                payload = parsed if isinstance(parsed, dict) else {}
        raw_data = payload.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        status = 401 if reason else (200 if state.up else 503)
        await state.record(
            Delivery(
                webhook_id=headers.get("webhook-id", ""),
                event_id=_str(data.get("trigger_event_id")),
                notification_id=_str(data.get("notification_id")),
                type=_str(payload.get("type")),
                organisation=_str(data.get("organisation")),
                client_id=_str(data.get("client_id")),
                arrived_at=datetime.now(UTC).isoformat(),
                webhook_timestamp=headers.get("webhook-timestamp"),
                status=status,
                verified=reason is None,
                reason=reason,
            )
        )
        if status == 401:
            return JSONResponse({"title": "webhook does not verify", "detail": reason}, status_code=401)
        if status == 503:
            return JSONResponse({"title": "down (fault scenario)"}, status_code=503)
        return JSONResponse({"received": True})

    async def control_state(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"title": "unauthorised"}, status_code=401)
        if request.method == "POST":
            state.up = bool((await request.json())["up"])
        return JSONResponse({"up": state.up, "registered": bool(state.keys), "organisation": state.organisation})

    async def control_keys(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"title": "unauthorised"}, status_code=401)
        body = await request.json()
        state.keys, state.organisation = [str(k) for k in body["keys"]], body.get("organisation")
        state.save_keys()
        return JSONResponse({"keys": len(state.keys), "organisation": state.organisation})

    async def control_deliveries(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"title": "unauthorised"}, status_code=401)
        return JSONResponse(state.deliveries)

    return Starlette(
        routes=[
            Route("/hooks", hook, methods=["POST"]),
            Route("/hooks/{rest:path}", hook, methods=["POST"]),
            Route("/control/state", control_state, methods=["GET", "POST"]),
            Route("/control/keys", control_keys, methods=["POST"]),
            Route("/control/deliveries", control_deliveries, methods=["GET"]),
        ]
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    ap = argparse.ArgumentParser(prog="python -m bench.chaos.webhook_sink", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    ap.add_argument("--tls-cert", type=Path, help="PEM with the certificate and its key (HTTPS); plain HTTP without it")
    ap.add_argument("--down", action="store_true", help="start answering 503")
    args = ap.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"webhook_sink: set {TOKEN_ENV} (the control routes' bearer token)", file=sys.stderr)
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = SinkState(args.state_dir, up=not args.down)
    config = uvicorn.Config(
        make_app(state, token),
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run()
    return 0


# ================================================================== the helper
class WebhookSinkError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the refusing answer's HTTP status, if any


class WebhookSink:
    """The sink process and what a scenario does with it (see the module's text)."""

    def __init__(self, port: int = DEFAULT_PORT, *, state_dir: Path | None = None, tls: bool = True, ca_dir: Path = LOCAL_CA_DIR) -> None:
        self.port = port
        self.state_dir = state_dir or DEFAULT_STATE_DIR / str(port)
        self.tls = tls
        self.ca_dir = ca_dir
        self._token = secrets.token_urlsafe(24)
        self._proc: asyncio.subprocess.Process | None = None
        # notifications URL, endpoint id, organisation, the caller's own auth headers (None: a Keycloak token each time)
        self._endpoint: tuple[str, str, str, dict[str, str] | None] | None = None
        self._issuer: str | None = None

    @property
    def url(self) -> str:
        """What to register: the sink's webhook URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def endpoint_id(self) -> str | None:
        return self._endpoint[1] if self._endpoint else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @staticmethod
    def notifications_env(ca_file: Path = LOCAL_CA_DIR / "ca.pem") -> dict[str, str]:
        """The environment a notifications service needs to deliver to the sink (loopback, the local CA)."""
        return {"LOTSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]', "LOTSE_NOTIFICATIONS_WEBHOOK_CA_FILE": str(ca_file)}

    async def __aenter__(self) -> WebhookSink:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            await self.unregister()
        finally:
            await self.stop()

    # ------------------------------------------------------------ the process
    async def start(self, *, down: bool = False, fresh: bool = True) -> None:
        """Starts the process and waits until it answers. `fresh`: forget deliveries and keys of an earlier run."""
        if self._proc is not None and self._proc.returncode is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if fresh:
            for name in ("deliveries.jsonl", "keys.json"):
                (self.state_dir / name).unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.chaos.webhook_sink", "--port", str(self.port), "--state-dir", str(self.state_dir)]
        if self.tls:
            cmd += ["--tls-cert", str(await asyncio.to_thread(self._certificate))]
        if down:
            cmd.append("--down")
        log = (self.state_dir / "sink.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=REPO, env={**os.environ, TOKEN_ENV: self._token}, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            log.close()
        (self.state_dir / "sink.pid").write_text(str(self._proc.pid))
        deadline = time.monotonic() + 30
        while True:
            if self._proc.returncode is not None:
                raise WebhookSinkError(f"the webhook sink exited ({self._proc.returncode}); see {self.state_dir / 'sink.log'}")
            with contextlib.suppress(httpx.HTTPError):
                await self._control("GET", "/control/state")
                return
            if time.monotonic() > deadline:
                raise WebhookSinkError(f"the webhook sink did not answer on port {self.port} within 30 s")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def _certificate(self) -> Path:
        from lotse_kit.tls import ensure_server_certificate

        if not self.ca_file.exists():
            raise WebhookSinkError(f"no local CA at {self.ca_file}: start the local stack first (deploy/local/stack.sh up)")
        ensure_server_certificate(self.ca_dir, "webhook-sink", ["127.0.0.1"])
        return self.ca_dir / "webhook-sink.pem"

    # ------------------------------------------------------------ switching and reading
    async def down(self) -> None:
        """From now on every delivery is answered 503."""
        await self._control("POST", "/control/state", json={"up": False})

    async def up(self) -> None:
        """From now on every verified delivery is answered 200."""
        await self._control("POST", "/control/state", json={"up": True})

    async def deliveries(self) -> list[Delivery]:
        return [Delivery(**d) for d in (await self._control("GET", "/control/deliveries")).json()]

    async def set_keys(self, keys: list[str], organisation: str | None) -> None:
        await self._control("POST", "/control/keys", json={"keys": keys, "organisation": organisation})

    async def _control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            r = await http.request(
                method, f"{self.url.rsplit('/hooks', 1)[0]}{path}", headers={"authorization": f"Bearer {self._token}"}, **kwargs
            )
        if r.status_code != 200:
            raise WebhookSinkError(f"the webhook sink refused {method} {path}: {r.status_code}")
        return r

    # ------------------------------------------------------------ registration
    async def register(
        self,
        org: str,
        *,
        event_types: list[str] | None = None,
        notifications_url: str | None = None,
        headers: dict[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        issuer: str | None = None,
    ) -> str:
        """Registers the sink as `org`'s webhook endpoint and gives it the secret (shown once) and the public key.

        By default as the organisation's partner system with a token from the local Keycloak, against the running
        notifications service; `headers` (and `http`, e.g. an in-process client) replace that. `issuer`: the realm URL
        (default LOTSE_OIDC_ISSUER, else the local Keycloak). Returns the endpoint id."""
        from lotse_kit.settings import service_url

        base = (notifications_url if notifications_url is not None else service_url("notifications")).rstrip("/")
        self._issuer = issuer
        auth = headers if headers is not None else await _org_headers(org, issuer)
        body: dict[str, Any] = {"url": self.url, "description": f"fault-suite webhook sink :{self.port}"}
        if event_types:
            body["event_types"] = event_types
        async with _client(http) as client:
            r = await client.post(f"{base}/v1/webhook-endpoints", json=body, headers=auth)
            if r.status_code != 201:
                raise WebhookSinkError(f"registering {self.url} for {org} was refused: {r.status_code} {_problem(r)}", r.status_code)
            created = r.json()
            k = await client.get(f"{base}/v1/webhooks/public-key")
            public = [key["public_key"] for key in k.json()["keys"]] if k.status_code == 200 else []
        self._endpoint = (base, str(created["id"]), org, headers)
        await self.set_keys([created["secret"], *public], org)
        return str(created["id"])

    async def unregister(self, *, http: httpx.AsyncClient | None = None) -> None:
        """Deletes the endpoint this sink registered (nothing more is recorded for it)."""
        if self._endpoint is None:
            return
        base, endpoint_id, org, headers = self._endpoint
        auth = headers if headers is not None else await _org_headers(org, self._issuer)
        async with _client(http) as client:
            r = await client.delete(f"{base}/v1/webhook-endpoints/{endpoint_id}", headers=auth)
        if r.status_code not in (200, 204, 404):
            raise WebhookSinkError(f"deleting endpoint {endpoint_id} was refused: {r.status_code} {_problem(r)}", r.status_code)
        self._endpoint = None


async def start_sink(port: int = DEFAULT_PORT, *, state_dir: Path | None = None, tls: bool = True, down: bool = False) -> WebhookSink:
    """A started sink (the same as `WebhookSink(...)` and `await sink.start()`)."""
    sink = WebhookSink(port, state_dir=state_dir, tls=tls)
    await sink.start(down=down)
    return sink


@contextlib.asynccontextmanager
async def _client(http: httpx.AsyncClient | None) -> Any:
    if http is not None:
        yield http
    else:
        async with httpx.AsyncClient(timeout=30) as client:
            yield client


async def _org_headers(org: str, issuer: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {await asyncio.to_thread(_org_token, org, issuer)}"}


def _org_token(org: str, issuer: str | None) -> str:
    """The organisation's partner system (or, if the demo realm has none, its caseworker), from the local Keycloak."""
    from lotse_cli.dev import find_user, user_token

    try:
        user = find_user(org, "partner_system")
    except LookupError:
        user = find_user(org, "caseworker")
    return user_token(user, issuer=issuer)


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("detail") or body.get("title") or body)[:300] if isinstance(body, dict) else str(body)[:200]


if __name__ == "__main__":
    raise SystemExit(main())
