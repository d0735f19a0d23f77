"""`lotse_kit.http_transport.ServiceTransport` against real servers on loopback: uvicorn (as the services run),
and raw asyncio servers for what uvicorn never does (malformed answers, closing at the wrong moment)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop

from lotse_kit.auth import request_with_service_token
from lotse_kit.http_transport import ServiceTransport, service_client
from lotse_kit.tls import ensure_server_certificate
from tests.kafka_helpers import eventually
from tests.kit.test_http_client import Tokens
from tests.peers import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class App:
    """An ASGI app that answers by path and counts the TCP connections it was called on (client address)."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(set(self.peers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.peers.append(scope["client"])
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path, headers = scope["path"], dict(scope["headers"])
        status, out_headers, chunks = 200, [(b"content-type", b"application/octet-stream")], [b"ok"]
        if path == "/echo":  # what arrived: method, length, digest
            chunks = [b"%s %d %s" % (scope["method"].encode(), len(body), hashlib.sha256(body).hexdigest().encode())]
        elif path == "/length":
            chunks = [b"x" * int(scope["query_string"] or 2)]
            out_headers.append((b"content-length", str(len(chunks[0])).encode()))
        elif path == "/chunked":
            size = int(scope["query_string"] or 2)
            chunks = [b"y" * min(65536, size - i) for i in range(0, size, 65536)] + [b""]
        elif path == "/close":
            out_headers.append((b"connection", b"close"))
        elif path == "/no-content":
            status, chunks = 204, [b""]
        elif path == "/not-modified":
            status, chunks = 304, [b""]
        elif path == "/slow":  # waits until the test lets it go
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
        elif path == "/token":
            ok = headers.get(b"authorization") == b"Bearer new"
            status, chunks = (200, [b"ok"]) if ok else (401, [b"refused"])
        elif path == "/cookie":
            out_headers.append((b"set-cookie", b"session=abc; Path=/"))
        elif path == "/cookies-seen":
            chunks = [headers.get(b"cookie", b"-")]
        elif path == "/forever":
            await asyncio.Event().wait()
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})


@asynccontextmanager
async def uvicorn_serving(app: Any, **config: Any) -> AsyncIterator[str]:
    """uvicorn on a free loopback port (as tests/fixtures.py `serving`, with uvicorn's options: TLS, keep-alive)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    scheme = "https" if "ssl_certfile" in config else "http"
    config.setdefault("timeout_graceful_shutdown", 0.25)  # handlers left waiting (/slow, /forever) do not hold up the end
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off", access_log=False, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout=30)
        if task.done():
            task.result()
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that runs `handle(reader, writer, n)` for its n-th connection; yields its URL and the count."""
    count = [0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        try:
            await handle(reader, writer, count[0])
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", count


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request head (the tests' requests to raw servers carry no body)."""
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
async def app_url() -> AsyncIterator[tuple[App, str]]:
    app = App()
    async with uvicorn_serving(app) as url:
        yield app, url


def pool_of(client: httpx.AsyncClient) -> Any:
    transport = client._transport
    assert isinstance(transport, ServiceTransport)
    (pool,) = transport._pools.values()
    return pool


# ------------------------------------------------------------------ keep-alive and the pool
async def test_sequential_calls_share_one_connection(app_url: tuple[App, str]) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=5) as client:
        for i in range(25):
            r = await client.post("/echo", json={"i": i}) if i % 2 else await client.get("/length?5")
            assert r.status_code == 200 and r.http_version == "HTTP/1.1" and r.reason_phrase == "OK"
    assert len(app.peers) == 25 and app.connections == 1


async def test_concurrent_calls_open_at_most_the_pool_limit_and_wait_for_a_free_one(app_url: tuple[App, str]) -> None:
    app, url = app_url
    transport = ServiceTransport(max_connections=3, max_keepalive=2)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as client:
        calls = [asyncio.create_task(client.get("/slow")) for _ in range(10)]
        await eventually(lambda: app.in_flight == 3)
        for _ in range(20):
            await asyncio.sleep(0.01)  # the seven others wait for a connection, they do not open one
        assert app.in_flight == 3 and len(pool_of(client).waiters) == 7
        app.release.set()
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 10
        assert app.max_in_flight == 3 and app.connections == 3
        assert len(pool_of(client).idle) == 2  # at most max_keepalive stay open
        await client.get("/length")
    assert app.connections == 3  # the last call reused a kept one


async def test_waiting_for_a_connection_longer_than_the_pool_timeout_is_a_pool_timeout(app_url: tuple[App, str]) -> None:
    app, url = app_url
    async with httpx.AsyncClient(base_url=url, transport=ServiceTransport(max_connections=1), timeout=10) as client:
        busy = asyncio.create_task(client.get("/slow"))
        await eventually(lambda: app.in_flight == 1)
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/length", timeout=httpx.Timeout(10, pool=0.2))
        app.release.set()
        assert (await busy).status_code == 200
        assert (await client.get("/length")).status_code == 200  # the timed-out waiter left no trace
    assert app.connections == 1


async def test_a_server_closing_after_each_response_gets_a_new_connection_each_time(app_url: tuple[App, str]) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=5) as client:
        for _ in range(5):
            assert (await client.get("/close")).content == b"ok"
            assert not pool_of(client).idle  # Connection: close is never kept
    assert app.connections == 5


async def test_an_idle_connection_the_server_closed_is_dropped_and_the_next_call_opens_one() -> None:
    app = App()
    async with uvicorn_serving(app, timeout_keep_alive=0.3) as url, service_client(url, timeout_s=5) as client:
        assert (await client.get("/length")).status_code == 200
        pool = pool_of(client)
        assert len(pool.idle) == 1
        await eventually(lambda: not pool.idle, timeout=10)  # uvicorn closed it after 0.3 s: seen at once
        assert (await client.get("/length")).status_code == 200
    assert app.connections == 2


async def test_a_kept_connection_found_dead_before_any_response_byte_is_retried_once_on_a_new_one() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second request on this connection: closed unanswered (a keep-alive race)

    async with raw_server(handle) as (url, count), service_client(url, timeout_s=5) as client:
        assert (await client.get("/a")).content == b"ok"
        assert (await client.get("/b")).content == b"ok"  # sent on the kept one, which died: once more on a new one
        assert count[0] == 2


async def test_a_new_connection_closed_unanswered_is_not_retried() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with raw_server(handle) as (url, count), service_client(url, timeout_s=5) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get("/a")
        assert count[0] == 1


async def test_a_kept_connection_dying_after_response_bytes_is_not_retried() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # then closed mid-body

    async with raw_server(handle) as (url, count), service_client(url, timeout_s=5) as client:
        await client.get("/a")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/b")
        assert count[0] == 1


async def test_aclose_closes_every_connection(app_url: tuple[App, str]) -> None:
    app, url = app_url
    client = service_client(url, timeout_s=5)
    busy = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: app.in_flight == 1)
    for _ in range(3):
        await client.get("/length")
    pool = pool_of(client)
    conns = list(pool.open)
    assert len(conns) == 2 and len(pool.idle) == 1  # one in use, one idle
    await client.aclose()
    assert all(c.transport.is_closing() for c in conns) and not pool.open
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await busy  # the call in flight lost its connection
    app.release.set()


# ------------------------------------------------------------------ bodies
@pytest.mark.parametrize("size", [0, 1, 1000, 3_000_000])
async def test_content_length_and_chunked_bodies_of_any_size(app_url: tuple[App, str], size: int) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=10) as client:
        for _ in range(2):
            fixed = await client.get(f"/length?{size}")
            assert fixed.headers["content-length"] == str(size) and fixed.content == b"x" * size
            chunked = await client.get(f"/chunked?{size}")
            assert chunked.headers["transfer-encoding"] == "chunked" and chunked.content == b"y" * size
    assert app.connections == 1


async def test_request_bodies_from_content_and_from_a_stream(app_url: tuple[App, str]) -> None:
    app, url = app_url
    big = bytes(range(256)) * 20_000  # 5 MB

    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 100_000):
            yield big[i : i + 100_000]

    want = f"POST {len(big)} {hashlib.sha256(big).hexdigest()}".encode()
    async with service_client(url, timeout_s=10) as client:
        assert (await client.post("/echo", content=big)).content == want
        assert (await client.post("/echo", content=parts())).content == want  # chunked, as httpx announces it
        r = await client.put("/echo", content=parts(), headers={"content-length": str(len(big))})
        assert r.content == want.replace(b"POST", b"PUT")
        assert (await client.post("/echo", json={"a": "ü"})).content.startswith(b"POST 10 ")
        assert (await client.get("/echo")).content.startswith(b"GET 0 ")
    assert app.connections == 1


async def test_head_204_and_304_have_no_body_and_keep_the_connection_in_step(app_url: tuple[App, str]) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=5) as client:
        for _ in range(2):
            head = await client.head("/length?1000")
            assert head.status_code == 200 and head.content == b""
            assert (await client.get("/no-content")).status_code == 204
            r = await client.get("/not-modified")
            assert r.status_code == 304 and r.content == b""
            assert (await client.get("/length?3")).content == b"xxx"  # the next answer is read from its start
    assert app.connections == 1


async def test_bodies_announced_but_never_sent_are_not_waited_for() -> None:
    """HEAD, 204 and 304 answers may carry a Content-Length of the body they leave out (RFC 9110 8.6)."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",  # to HEAD
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",  # to HEAD
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    ]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        await read_request(reader)

    async with raw_server(handle) as (url, count), service_client(url, timeout_s=5) as client:
        got = [await client.head("/"), await client.head("/"), await client.get("/"), await client.get("/"), await client.get("/")]
        assert [(r.status_code, r.content) for r in got] == [(200, b""), (200, b""), (304, b""), (204, b""), (200, b"abc")]
        assert count[0] == 1


# ------------------------------------------------------------------ timeouts and errors
async def test_read_timeout_and_the_next_call_still_works(app_url: tuple[App, str]) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/forever", timeout=httpx.Timeout(5, read=0.3))
        assert (await client.get("/length")).status_code == 200
    assert app.connections == 2  # the timed-out connection was not kept


async def test_a_slowly_arriving_body_is_no_read_timeout() -> None:
    """The read timeout is the longest pause between bytes, not the time for the whole response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for b in b"abcdef":
            await asyncio.sleep(0.15)
            writer.write(bytes([b]))
            await writer.drain()

    async with raw_server(handle) as (url, _), service_client(url, timeout_s=0.5) as client:
        assert (await client.get("/")).content == b"abcdef"  # 0.9 s in all, never 0.5 s without a byte


async def test_write_timeout_when_the_server_reads_nothing() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.transport.pause_reading()
        await asyncio.sleep(30)

    async with raw_server(handle) as (url, _), service_client(url, timeout_s=5) as client:
        with pytest.raises(httpx.WriteTimeout):
            await client.post("/", content=b"z" * 128_000_000, timeout=httpx.Timeout(5, write=0.3))


async def test_connect_timeout_when_the_tls_handshake_never_completes() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(30)  # accepts TCP, never answers the ClientHello

    async with raw_server(handle) as (url, _), service_client(url.replace("http:", "https:"), timeout_s=5) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("/", timeout=httpx.Timeout(5, connect=0.3))


async def test_connection_refused_is_a_connect_error() -> None:
    async with service_client(f"http://127.0.0.1:{free_port()}", timeout_s=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


@pytest.mark.parametrize(
    ("answer", "then_close"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n", False),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", True),
    ],
)
async def test_a_malformed_or_cut_response_is_a_remote_protocol_error(answer: bytes, then_close: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if not then_close:
            await reader.read()  # the client has to see the error itself, not wait for the close

    async with raw_server(handle) as (url, _), service_client(url, timeout_s=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


@pytest.mark.parametrize(
    "headers", [{"x-evil": "a\r\nInjected: 1"}, {"x-evil": "a\nb"}, {"x-evil": "a\x00b"}, {"bad name": "v"}, {"x:y": "v"}]
)
async def test_a_header_that_would_split_the_request_is_refused_before_sending(app_url: tuple[App, str], headers: dict[str, str]) -> None:
    app, url = app_url
    async with service_client(url, timeout_s=5) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get("/echo", headers=headers)
    assert app.peers == []


# ------------------------------------------------------------------ TLS
async def test_tls_verified_against_the_given_ca_and_refused_with_another(tmp_path: Path) -> None:
    ensure_server_certificate(tmp_path / "pki", "server", ["127.0.0.1"])
    ensure_server_certificate(tmp_path / "other", "server", ["127.0.0.1"])
    pem = str(tmp_path / "pki" / "server.pem")
    app = App()
    async with uvicorn_serving(app, ssl_certfile=pem, ssl_keyfile=pem) as url:
        assert url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        async with service_client(url, timeout_s=5, verify=trusted) as client:
            for _ in range(3):
                assert (await client.get("/length?4")).content == b"xxxx"
        assert app.connections == 1
        for verify in (ssl.create_default_context(cafile=str(tmp_path / "other" / "ca.pem")), True):
            async with service_client(url, timeout_s=5, verify=verify) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get("/length")
        async with service_client(url.replace("127.0.0.1", "localhost"), timeout_s=5, verify=trusted) as client:
            with pytest.raises(httpx.ConnectError):  # the certificate names 127.0.0.1 only
                await client.get("/length")
    assert app.connections == 1


# ------------------------------------------------------------------ the kit's calls
async def test_a_refused_service_token_is_renewed_once_over_the_transport(app_url: tuple[App, str]) -> None:
    app, url = app_url

    async with service_client(url, timeout_s=5) as client:
        for _ in range(3):
            r = await request_with_service_token(client, "GET", "/token", tokens=Tokens(), params={"a": "b"})
            assert r.status_code == 200
    assert len(app.peers) == 6 and app.connections == 1


async def test_service_client_uses_a_given_transport() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with service_client("http://consent.test:8002/", timeout_s=3, transport=transport) as client:
        assert client._transport is transport and str(client.base_url) == "http://consent.test:8002"
        assert client.timeout == httpx.Timeout(3)
        assert (await client.get("/v1/decisions")).status_code == 204


async def test_cookies_a_service_sets_are_kept_as_httpx_keeps_them(app_url: tuple[App, str]) -> None:
    _, url = app_url
    async with service_client(url, timeout_s=5) as client:
        assert (await client.get("/cookies-seen")).content == b"-"
        await client.get("/cookie")
        assert client.cookies["session"] == "abc"
        assert (await client.get("/cookies-seen")).content == b"session=abc"


def test_the_transport_works_on_uvloop(tmp_path: Path) -> None:
    """The services run on uvloop (its own TCP and TLS transports): the same calls there, on a loop of its own."""
    ensure_server_certificate(tmp_path, "server", ["127.0.0.1"])
    pem = str(tmp_path / "server.pem")
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    async def scenario(**tls: Any) -> list[int]:
        app = App()
        async with uvicorn_serving(app, **tls) as url, service_client(url, timeout_s=5, verify=trusted) as client:
            sizes = [len((await client.get(f"/chunked?{n}")).content) for n in (10, 200_000)]
            sizes.append(len((await client.post("/echo", content=b"p" * 300_000)).content))
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/forever", timeout=httpx.Timeout(5, read=0.2))
            sizes.append(len((await client.get("/length?7")).content))
        assert app.connections == 2
        return sizes

    assert uvloop.run(scenario()) == [10, 200_000, 76, 7]
    assert uvloop.run(scenario(ssl_certfile=pem, ssl_keyfile=pem)) == [10, 200_000, 76, 7]
