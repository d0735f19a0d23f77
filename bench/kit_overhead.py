"""The kit's own CPU per log line, per served request and per service-to-service call, before and after.

    .venv/bin/python -m bench.kit_overhead [logs] [http] [client] [--rounds 5] [--compare-rev 893589d] [--profile http]

No infrastructure needed: everything runs in this process, CPU time from `time.process_time()`.
"Before" is `lotse_kit/` as of the git revision `--compare-rev` (default 893589d, the kit before these changes), loaded next to the
working tree's as the package `lotse_kit_rev`; each round measures before and after in turn, and the
figures are medians over the rounds with their ratio (the machine is shared and noisy: compare ratios).

- **logs**: `JsonFormatter.format` and a whole `logger.info(...)` through the configured handler into
  /dev/null, for the service's typical lines (the request line, an event line in an event context, a line
  with a UUID and a nested dict).
- **http**: one request through an ASGI app built by `create_app` (the kit's middleware, problem handlers,
  an access policy with a token verified by `lotse_kit.auth`, the request log line at INFO), called
  directly (no sockets, no uvicorn: only what runs in the app): `GET /v1/decisions` as the consent
  service declares it (a service token, policy `services`) and `POST /v1/clients/{id}/referrals` like
  intake's (a caseworker's token, policy `org-staff`, a JSON body). The handlers return a constant, so
  the figures are the framework's and the kit's. Baseline: the same routes on a bare FastAPI app (no kit,
  no token check).
- **client**: one call of `lotse_kit.auth.get_with_service_token` / `post_with_service_token` on a kept
  `httpx.AsyncClient` against an in-process transport answering 200 at once (so only the client's side
  is measured: request building, headers, the auth flow, response handling), next to variants of the
  client's configuration and a bare `client.get`.
- **transport**: the same calls over loopback to a minimal uvicorn app (another process, its CPU not counted)
  on a client with httpx's default transport (httpcore, h11, anyio) and on one from `lotse_kit.http_transport.
  service_client` (asyncio protocol, httptools; its client reads only responses with `Set-Cookie` into the
  cookie jar), and on the kit's transport under a plain client (the transport's share alone), alternated in
  each round; CPU of the calling process and wall time per call, on asyncio's loop and on uvloop. Not part of
  the default run (`transport` names it).
"""

import argparse
import asyncio
import atexit
import cProfile
import gc
import importlib
import io
import logging
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from contracts.vocab import DataCategory, Purpose

REPO = Path(__file__).resolve().parent.parent
REV_PACKAGE = "lotse_kit_rev"


# ------------------------------------------------------------------ the two kits
def load_rev_kit(rev: str) -> str:
    """`lotse_kit/` as of git revision `rev`, importable as `lotse_kit_rev` (its relative imports stay inside it)."""
    tmp = Path(tempfile.mkdtemp(prefix="kit-rev-"))
    atexit.register(shutil.rmtree, tmp, True)
    archive = subprocess.run(["git", "archive", rev, "lotse_kit"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    shutil.move(tmp / "lotse_kit", tmp / REV_PACKAGE)
    sys.path.insert(0, str(tmp))
    return REV_PACKAGE


def kit(package: str, module: str) -> ModuleType:
    return importlib.import_module(f"{package}.{module}")


def median_us(xs: list[float]) -> float:
    return statistics.median(xs) * 1e6


def report(title: str, rows: list[tuple[str, list[float]]], base: str) -> None:
    print(f"\n{title}")
    ref = median_us(dict(rows)[base])
    for name, xs in rows:
        m = median_us(xs)
        print(f"  {name:<44} {m:8.2f} µs   ratio to {base}: {m / ref:5.2f}   (rounds: {', '.join(f'{x * 1e6:.1f}' for x in xs)})")


def cpu_per_call(fn: Callable[[], object], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


async def acpu_per_call(fn: Callable[[], Awaitable[object]], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - t0) / n


# ------------------------------------------------------------------ logs
def _records(logging_mod: ModuleType) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "request",
            {
                "method": "POST",
                "path": "/v1/clients/6f1c1e0e-5d0b-4c1e-9b1a-2f7f3f0d9a10/referrals",
                "subject": "m.mueller",
                "org": "jobcenter-kreis-paderborn",
                "service": None,
                "policy": "org-staff",
            },
        ),
        ("event processed", {"topic": "lotse.referrals.v1", "partition": 3, "offset": 123456, "type": "lotse.referral.sent.v1"}),
        ("referral sent", {"referral_id": uuid.uuid4(), "recipient": "caritas-paderborn", "need": {"kind": "language", "level": "B1"}}),
    ]


def bench_logs(revs: list[tuple[str, str]], rounds: int, n: int) -> None:
    devnull = open("/dev/null", "w")  # noqa: SIM115 - open for the whole run
    fmt: dict[str, list[float]] = {}
    emit: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, package in revs:
            lg = kit(package, "logging")
            formatter = lg.JsonFormatter()
            records = []
            for msg, extra in _records(lg):
                r = logging.LogRecord("lotse_kit.bench", logging.INFO, __file__, 1, msg, None, None)
                r.__dict__.update(extra)
                records.append(r)
            token = lg.service_var.set("intake")
            with lg.event_context(uuid.uuid4(), uuid.uuid4()):
                per = cpu_per_call(lambda f=formatter, rs=records: [f.format(r) for r in rs], n) / len(records)
            fmt.setdefault(label, []).append(per)
            # The whole line as a service writes it: `configure` (its root handler on stdout, here /dev/null), then a
            # record created, checked against the level, formatted, written and flushed.
            logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True  # the stdlib's defaults
            stdout, sys.stdout = sys.stdout, devnull
            try:
                lg.configure("intake", "INFO")
            finally:
                sys.stdout = stdout
            logger = logging.getLogger("lotse_kit.bench")

            lines = _records(lg)

            def line(logger: logging.Logger = logger, lines: list[tuple[str, dict[str, Any]]] = lines) -> None:
                for msg, extra in lines:
                    logger.info(msg, extra=extra)

            with lg.event_context(uuid.uuid4(), uuid.uuid4()):
                per = cpu_per_call(line, n) / 3
            emit.setdefault(label, []).append(per)
            lg.service_var.reset(token)
    report("log line: JsonFormatter.format, per line", list(fmt.items()), revs[0][0])
    report("log line: logger.info(..., extra=...) through a StreamHandler to /dev/null, per line", list(emit.items()), revs[0][0])


# ------------------------------------------------------------------ http
class ReferralIn(BaseModel):
    recipient: str
    need: str
    note: str | None = None


class _Runtime:
    service = "bench"

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def readiness(self) -> dict[str, str]:
        return {}


class _Members:
    def has(self, org_id: str) -> bool:
        return True


DECISION = {"allowed": True, "consent_id": str(uuid.uuid4()), "reason": "", "missing_categories": []}


def kit_app(package: str) -> tuple[FastAPI, dict[str, str], dict[str, str]]:
    """An app as a service builds it with `package`'s kit; the headers of a service's and a caseworker's token."""
    access, auth, http = kit(package, "access"), kit(package, "auth"), kit(package, "http")
    signer = auth.LocalSigner()
    guard = access.Guard(_Members())
    Service = Annotated[access.CallerContext, guard(access.SERVICES)]
    Staff = Annotated[access.RequestContext, guard(access.ORG_STAFF)]
    r = APIRouter()

    @r.get("/v1/decisions")
    async def decision(
        _: Service,
        client_id: uuid.UUID,
        recipient: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")],
        purpose: Purpose,
        category: Annotated[list[DataCategory], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    ) -> JSONResponse:
        return JSONResponse(DECISION)

    @r.post("/v1/clients/{client_id}/referrals", status_code=201)
    async def refer(client_id: uuid.UUID, body: ReferralIn, ctx: Staff) -> JSONResponse:
        return JSONResponse({"referral_id": str(client_id), "org": ctx.acting_org}, status_code=201)

    app = http.create_app(_Runtime(), [r])
    auth.install(app, signer.verifier())
    service = {"authorization": "Bearer " + signer.token(subject="service-account-lotse-intake", service="intake", lifetime_s=3600)}
    staff = {
        "authorization": "Bearer "
        + signer.token(subject="m.mueller", org="jobcenter-kreis-paderborn", roles=["caseworker"], lifetime_s=3600)
    }
    return app, service, staff


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/decisions")
    async def decision(
        client_id: uuid.UUID,
        recipient: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")],
        purpose: Purpose,
        category: Annotated[list[DataCategory], Query()] = [],  # noqa: B006
    ) -> JSONResponse:
        return JSONResponse(DECISION)

    @app.post("/v1/clients/{client_id}/referrals", status_code=201)
    async def refer(client_id: uuid.UUID, body: ReferralIn) -> JSONResponse:
        return JSONResponse({"referral_id": str(client_id), "org": "x"}, status_code=201)

    return app


CLIENT_ID = uuid.uuid4()
DECISION_QUERY = f"client_id={CLIENT_ID}&recipient=caritas-paderborn&purpose=referral&category=identity&category=contact".encode()
REFERRAL_BODY = b'{"recipient": "caritas-paderborn", "need": "language_course", "note": "B1"}'


def asgi_call(app: Any, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes) -> Callable[[], Awaitable[int]]:
    raw_headers = [(b"host", b"127.0.0.1:8002"), (b"user-agent", b"python-httpx/0.28.1"), (b"accept", b"*/*")]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def call() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8002),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return call


def _log_to_devnull(package: str | None) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    if package is not None:
        handler.setFormatter(kit(package, "logging").JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)  # the services' default: the request line is written


async def bench_http(revs: list[tuple[str, str]], rounds: int, n: int, profile: bool) -> None:
    variants: list[tuple[str, str | None, dict[str, Callable[[], Awaitable[int]]]]] = []
    bare = bare_app()
    variants.append(
        (
            "bare FastAPI (no kit)",
            None,
            {
                "GET /v1/decisions": asgi_call(bare, "GET", "/v1/decisions", DECISION_QUERY, {}, b""),
                "POST referral": asgi_call(bare, "POST", f"/v1/clients/{CLIENT_ID}/referrals", b"", {}, REFERRAL_BODY),
            },
        )
    )
    for label, package in revs:
        app, service, staff = kit_app(package)
        variants.append(
            (
                label,
                package,
                {
                    "GET /v1/decisions": asgi_call(app, "GET", "/v1/decisions", DECISION_QUERY, service, b""),
                    "POST referral": asgi_call(app, "POST", f"/v1/clients/{CLIENT_ID}/referrals", b"", staff, REFERRAL_BODY),
                },
            )
        )
    for _label, package, calls in variants:  # warm: the token cache, FastAPI's caches, the key fetch
        _log_to_devnull(package)
        for name, call in calls.items():
            for _ in range(50):
                status = await call()
            assert status in (200, 201), (name, status)
    gc.freeze()  # as `lotse_kit.serve.run` does after start-up
    if profile:
        label, package, calls = variants[-1]
        _log_to_devnull(package)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await calls["GET /v1/decisions"]()
        prof.disable()
        stats = pstats.Stats(prof).sort_stats("cumulative")
        stats.print_stats(25)
        stats.print_stats("lotse_kit|logging|httpx|starlette/requests|datastructures", 40)
        return
    results: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for label, package, calls in variants:
            _log_to_devnull(package)
            for name, call in calls.items():
                results.setdefault(name, {}).setdefault(label, []).append(await acpu_per_call(call, n))
    for name, by_label in results.items():
        report(f"http: {name}, CPU per request in the app", list(by_label.items()), revs[0][0])


# ------------------------------------------------------------------ client
def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, content=b'{"allowed":true,"consent_id":null,"reason":"","missing_categories":[]}', headers={"content-type": "application/json"}
    )


class _Instant(httpx.AsyncBaseTransport):
    """Answers every request at once: only the client's own work is measured."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            await request.aread()
        return _answer(request)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _NoCookieClient(httpx.AsyncClient):
    """What a client that never keeps cookies would save: httpx parses every response for cookies (via urllib)."""

    _none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass


_SERVER = """
import sys, uvicorn
BODY = b'{"allowed":true,"consent_id":null,"reason":"","missing_categories":[]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_client(revs: list[tuple[str, str]], rounds: int, n: int, real: bool) -> None:
    """`real`: the calls go over loopback to a minimal uvicorn app in another process (its CPU not counted)."""
    server = None
    transport: httpx.AsyncBaseTransport | None = _Instant()
    base = "http://consent.bench.invalid:8002"  # never reachable: an instant transport answers
    if real:
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)])
        base, transport = f"http://127.0.0.1:{port}", None
        for _ in range(100):
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(base + "/")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    try:
        await _bench_client(
            revs, rounds, n, base, transport, "over loopback to a minimal uvicorn app" if real else "the transport answers at once"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


async def _bench_client(
    revs: list[tuple[str, str]], rounds: int, n: int, base_url: str, transport: httpx.AsyncBaseTransport | None, how: str
) -> None:
    params = [
        ("client_id", str(CLIENT_ID)),
        ("recipient", "caritas-paderborn"),
        ("purpose", "referral"),
        ("category", "identity"),
        ("category", "contact"),
    ]
    body = {"items": [{"client_id": str(CLIENT_ID), "recipient": "caritas-paderborn", "purpose": "referral", "categories": ["identity"]}]}

    async def token() -> str:
        return "eyJ.a-service-token.sig"

    clients = {
        "as the services build it": httpx.AsyncClient(base_url=base_url, timeout=3.0, transport=transport),
        "no trust_env, explicit limits": httpx.AsyncClient(
            base_url=base_url,
            timeout=3.0,
            transport=transport,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=20),
        ),
        "no cookie parsing (a client subclass)": _NoCookieClient(base_url=base_url, timeout=3.0, transport=transport),
    }
    variants: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    for label, package in revs:
        auth = kit(package, "auth")
        for cname, client in clients.items():
            variants.append(
                (
                    f"GET {label}, {cname}",
                    lambda a=auth, c=client: a.get_with_service_token(c, "/v1/decisions", tokens=token, params=params),
                )
            )
        c0 = clients["as the services build it"]
        variants.append((f"POST {label}", lambda a=auth, c=c0: a.post_with_service_token(c, "/v1/decisions", tokens=token, json=body)))
    c0 = clients["as the services build it"]
    headers = {"Authorization": "Bearer eyJ.a-service-token.sig"}
    variants.append(("GET bare client.get(path, params, headers)", lambda: c0.get("/v1/decisions", params=params, headers=headers)))
    url = httpx.URL(base_url + "/v1/decisions", params=params)
    variants.append(("GET bare client.get(prebuilt URL, headers)", lambda: c0.get(url, headers=headers)))
    for _name, fn in variants:
        for _ in range(50):
            await fn()
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in variants:
            results.setdefault(name, []).append(await acpu_per_call(fn, n))
    report(f"client: one call, CPU on the calling side ({how})", list(results.items()), next(iter(results)))


# ------------------------------------------------------------------ transport
async def _wall_and_cpu_per_call(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


async def _bench_transport(rounds: int, n: int, loop_name: str) -> None:
    from lotse_kit.auth import get_with_service_token, post_with_service_token
    from lotse_kit.http_transport import ServiceTransport, service_client

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(base + "/")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        params = [("client_id", str(CLIENT_ID)), ("recipient", "caritas-paderborn"), ("purpose", "referral"), ("category", "identity")]
        body = {
            "items": [{"client_id": str(CLIENT_ID), "recipient": "caritas-paderborn", "purpose": "referral", "categories": ["identity"]}]
        }

        async def token() -> str:
            return "eyJ.a-service-token.sig"

        clients = {
            "httpx's default transport (httpcore, h11, anyio)": httpx.AsyncClient(base_url=base, timeout=3.0),
            "ServiceTransport, httpx's cookie jar": httpx.AsyncClient(base_url=base, timeout=3.0, transport=ServiceTransport()),
            "ServiceTransport (service_client)": service_client(base, timeout_s=3.0),
        }
        variants: list[tuple[str, str, Callable[[], Awaitable[object]]]] = []
        for cname, c in clients.items():
            variants.append(("GET", cname, lambda c=c: get_with_service_token(c, "/v1/decisions", tokens=token, params=params)))
            variants.append(("POST", cname, lambda c=c: post_with_service_token(c, "/v1/decisions", tokens=token, json=body)))
        for _m, _c, fn in variants:
            for _ in range(200):
                await fn()
        cpu: dict[str, dict[str, list[float]]] = {}
        wall: dict[str, dict[str, list[float]]] = {}
        for _ in range(rounds):
            for method, cname, fn in variants:
                w, c = await _wall_and_cpu_per_call(fn, n)
                cpu.setdefault(method, {}).setdefault(cname, []).append(c)
                wall.setdefault(method, {}).setdefault(cname, []).append(w)
        first = next(iter(clients))
        for method in cpu:
            report(
                f"transport ({loop_name}): {method} with a service token over loopback, CPU of the calling process",
                list(cpu[method].items()),
                first,
            )
            report(f"transport ({loop_name}): {method}, wall time per call (the server's part included)", list(wall[method].items()), first)
        for c in clients.values():
            await c.aclose()
    finally:
        server.terminate()
        server.wait(10)


def bench_transport(rounds: int, n: int) -> None:
    """The client's CPU per service-to-service call with httpx's default transport and with the kit's, alternated
    in each round, over loopback to a minimal uvicorn app in another process (its CPU not counted); on asyncio's
    loop and on uvloop (which the services run)."""
    import uvloop

    asyncio.run(_bench_transport(rounds, n, "asyncio loop"))
    uvloop.run(_bench_transport(rounds, n, "uvloop"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", choices=["logs", "http", "client", "transport", []], default=[])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=2000, help="calls per variant and round")
    p.add_argument("--compare-rev", default="893589d", help="the git revision whose lotse_kit is 'before'")
    p.add_argument("--real", action="store_true", help="client: call a minimal uvicorn app over loopback instead of an instant transport")
    p.add_argument("--profile", action="store_true", help="http: cProfile the working tree's GET /v1/decisions instead")
    a = p.parse_args()
    what = a.what or ["logs", "http", "client"]
    if what == ["transport"]:  # one kit only: no revision to load
        print(f"kit overhead, {a.rounds} rounds of {a.n} calls per variant")
        bench_transport(a.rounds, a.n)
        return
    revs = [(f"before ({a.compare_rev})", load_rev_kit(a.compare_rev)), ("after (working tree)", "lotse_kit")]
    print(f"kit overhead, {a.rounds} rounds of {a.n} calls per variant, before = lotse_kit at {a.compare_rev}")
    if "logs" in what:
        bench_logs(revs, a.rounds, a.n)
    if "http" in what:
        asyncio.run(bench_http(revs, a.rounds, a.n, a.profile))
    if "client" in what:
        asyncio.run(bench_client(revs, a.rounds, a.n, a.real))
    if "transport" in what:
        bench_transport(a.rounds, a.n)


if __name__ == "__main__":
    main()
