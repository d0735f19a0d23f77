"""A lean httpx transport for the calls between services: HTTP/1.1 keep-alive on asyncio, httptools' parser.

httpx's default transport runs every call through httpcore, h11 and anyio; at 80 referrals/s those took
about 10 % of intake's CPU, more than the rest of the call. `ServiceTransport` replaces them under an
`httpx.AsyncClient` for the kit's service-to-service calls (`service_client`): the client, its `Request`s,
`Response`s and exceptions stay httpx's, so callers and their `except httpx.…` are unchanged. What it keeps
from the default transport:

- the request's timeouts (`request.extensions["timeout"]`): `connect` (TCP and TLS handshake), `write`
  (while the kernel's send buffer is full), `read` (no byte received for that long) and `pool` (waiting
  for a free connection), raising httpx's `ConnectTimeout`, `WriteTimeout`, `ReadTimeout`, `PoolTimeout`;
- TLS for https URLs, verified with httpx's default context (`verify=True`) or a given `ssl.SSLContext`;
- per origin at most `max_connections` connections, of which at most `max_keepalive` wait idle for reuse,
  newest first (LIFO), for at most `keepalive_expiry_s`. An idle connection the server closed (EOF, reset,
  or a response with `Connection: close`) is dropped at once; a request on a reused connection that turned
  out dead before any byte of the response came is sent once more on a fresh connection, as httpcore does;
- Content-Length, chunked and read-until-close response bodies; no body for HEAD, 1xx, 204 and 304;
  request bodies from `request.content` or streamed from `request.stream` (chunked when httpx says so);
- httpx's exception types: `ConnectError`, `ReadError`, `WriteError`, `RemoteProtocolError` (a malformed
  response, or the server closing mid-response), `LocalProtocolError` (a header with CR, LF or NUL).

What it leaves out: HTTP/2, proxies (environment proxies are not used for a client with its own transport
anyway) and streaming responses: a response body is read whole before the `Response` is returned, which is
what the services' JSON APIs need (`client.stream(...)` still works, with the body already in memory).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from typing import Any, cast

import httptools
import httpx

__all__ = ["ServiceTransport", "service_client"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHECKED_NAMES: set[bytes] = set()  # header names and methods already found to be tokens (a few dozen)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_SERVER_GONE = "Server disconnected without sending a response."


def _token(name: bytes) -> bool:
    if name in _CHECKED_NAMES:
        return True
    if _TOKEN.fullmatch(name) is None:
        return False
    if len(_CHECKED_NAMES) < 1024:
        _CHECKED_NAMES.add(name)
    return True


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: the protocol the event loop feeds, and one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False  # EOF, reset or closed by us: never reused
        self.idle_since = 0.0
        self.reused = False  # served a response before this exchange
        self.paused = False  # the kernel's send buffer is full
        self.drained: asyncio.Future[None] | None = None
        # The exchange in progress (`waiter` is None while idle).
        self.waiter: asyncio.Future[None] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.head = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.spoiled = False  # bytes beyond the response: the connection cannot be reused
        self.got_bytes = False
        self.sending = False
        self.error: httpx.TransportError | None = None
        self.dead_on_arrival = False  # failed before any response byte on a reused connection
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.complete:
            # Nothing was asked: a server must not send anything now.
            self.spoiled = True
            self.close()
            return
        self.got_bytes = True
        self.last_read = self.loop.time()
        assert self.parser is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols, which was not asked for"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True
        if self.waiter is not None and not self.complete:
            if self.headers_done and self._until_close():
                self._finish()
            elif not self.got_bytes:
                self._fail(httpx.RemoteProtocolError(_SERVER_GONE), dead=True)
            else:
                self._fail(httpx.RemoteProtocolError("the server closed the connection before the response was complete"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.complete:
            if exc is None:
                gone = _SERVER_GONE if not self.got_bytes else "the connection closed mid-response"
                self._fail(httpx.RemoteProtocolError(gone), dead=not self.got_bytes)
            else:
                error = httpx.WriteError if self.sending else httpx.ReadError
                self._fail(error(f"{type(exc).__name__}: {exc}"), dead=not self.got_bytes)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.pool.lost(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            self.spoiled = True  # a second response nobody asked for: ignored, and the connection dropped
            return
        self.status, self.reason, self.headers, self.body = 0, b"", [], []

    def on_status(self, status: bytes) -> None:
        if not self.complete:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        if self.complete:
            return
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.headers_done = True
        if self.head:
            # A HEAD response announces a body it never sends (llhttp cannot be told so: its next parser starts afresh).
            connection = b",".join(v for n, v in self.headers if n.lower() == b"connection").lower()
            if self.parser.get_http_version() == "1.1":
                self.keep_alive = b"close" not in connection
            else:
                self.keep_alive = b"keep-alive" in connection
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.spoiled = True  # a body after a HEAD response's head: the server is out of step
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status >= 200 and not self.complete:
            assert self.parser is not None
            self.keep_alive = self.parser.should_keep_alive()  # only valid here: llhttp resets after the message
            self._finish()

    # -------------------------------------------------------------- the exchange
    def _until_close(self) -> bool:
        """The response's body ends when the connection does (neither Content-Length nor chunked)."""
        return not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers)

    def _finish(self) -> None:
        self.complete = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: httpx.TransportError, *, dead: bool = False) -> None:
        if self.complete:  # garbage after a whole response: the response stands, the connection goes
            self.spoiled = True
            self.close()
            return
        if self.error is None:
            self.error = error
            self.dead_on_arrival = dead and self.reused
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _read_timer(self, read: float) -> None:
        self.timer = None
        if self.complete or self.error is not None:
            return
        due = self.last_read + read
        if self.loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no byte of the response came within {read} s"))
        else:
            self.timer = self.loop.call_at(due, self._read_timer, read)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _drain(self, write: float | None) -> None:
        if not self.paused or self.closed:
            return
        self.drained = self.loop.create_future()
        try:
            await asyncio.wait_for(self.drained, write)
        except TimeoutError:
            error = httpx.WriteTimeout(f"the request could not be sent within {write} s")
            self._fail(error)
            raise error from None
        finally:
            self.drained = None

    async def exchange(self, request: httpx.Request, head: bytes, body: bytes | None, timeouts: dict[str, Any]) -> httpx.Response:
        """Sends `head` (and `body`, or `request.stream` when it is None) and reads the whole response."""
        loop = self.loop
        self.waiter = waiter = loop.create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.head = request.method == "HEAD"
        self.status, self.reason, self.headers, self.body = 0, b"", [], []
        self.headers_done = self.complete = self.got_bytes = self.keep_alive = False
        self.error = None
        self.dead_on_arrival = False
        transport = self.transport
        assert transport is not None
        write = timeouts.get("write")
        self.sending = True
        try:
            if self.closed or transport.is_closing():
                self._fail(httpx.WriteError("the connection is closed"), dead=True)
            elif body is not None:
                transport.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    transport.write(body)
                await self._drain(write)
            else:
                await self._send_stream(request, head, write)
        finally:
            self.sending = False
        read = timeouts.get("read")
        if self.error is None and not self.complete:
            self.last_read = loop.time()
            if read is not None:
                self.timer = loop.call_at(self.last_read + read, self._read_timer, read)
            try:
                await waiter
            finally:
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
        self.waiter = None
        if self.error is not None:
            raise self.error
        version = self.parser.get_http_version()
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        if not self.keep_alive:
            self.spoiled = True  # Connection: close, HTTP/1.0 without keep-alive, or a body read until the close
        return httpx.Response(
            self.status,
            headers=self.headers,
            stream=httpx.ByteStream(data),
            extensions={"http_version": b"HTTP/1.1" if version == "1.1" else f"HTTP/{version}".encode(), "reason_phrase": self.reason},
            request=request,
        )

    async def _send_stream(self, request: httpx.Request, head: bytes, write: float | None) -> None:
        assert self.transport is not None
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        self.transport.write(head)
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            if self.error is not None or self.complete or self.closed:
                break  # the server answered (or went away) before the body was sent
            if chunk:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._drain(write)
        else:
            if chunked and not self.closed:
                self.transport.write(b"0\r\n\r\n")
            await self._drain(write)
            return
        self.spoiled = True  # the request was cut short: this connection is out of step

    @property
    def reusable(self) -> bool:
        return self.complete and self.error is None and not self.closed and not self.spoiled


class _Pool:
    """The connections to one origin (scheme, host, port)."""

    def __init__(self, owner: ServiceTransport, host: str, port: int, tls: ssl.SSLContext | None, server_hostname: str | None) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.tls, self.server_hostname = host, port, tls, server_hostname
        self.idle: list[_Connection] = []  # newest last
        self.open: set[_Connection] = set()  # idle and in use
        self.opening = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, request: httpx.Request, timeouts: dict[str, Any], *, fresh: bool) -> _Connection:
        owner = self.owner
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else self.loop.time() + pool_timeout
        while True:
            while self.idle and not fresh:
                conn = self.idle.pop()
                if conn.closed or self.loop.time() - conn.idle_since > owner.keepalive_expiry_s:
                    self.discard(conn)
                    continue
                conn.reused = True
                return conn
            if fresh and self.idle and len(self.open) + self.opening >= owner.max_connections:
                self.discard(self.idle.pop(0))  # make room for the fresh one: drop the oldest idle connection
            if len(self.open) + self.opening < owner.max_connections:
                return await self._connect(request, timeouts.get("connect"))
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, max(0.0, deadline - self.loop.time()))
            except TimeoutError:
                raise httpx.PoolTimeout(
                    f"no connection to {self.host}:{self.port} became free within {pool_timeout} s", request=request
                ) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.wake()  # pass the free slot on
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                if waiter in self.waiters:  # woken ones were taken off already
                    self.waiters.remove(waiter)

    async def _connect(self, request: httpx.Request, timeout: float | None) -> _Connection:
        self.opening += 1
        conn = _Connection(self)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, self.host, self.port, ssl=self.tls, server_hostname=self.server_hostname),
                timeout,
            )
        except TimeoutError:
            conn.close()
            raise httpx.ConnectTimeout(f"no connection to {self.host}:{self.port} within {timeout} s", request=request) from None
        except OSError as exc:  # refused, unreachable, TLS refused (ssl.SSLError is an OSError)
            conn.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from exc
        except BaseException:
            conn.close()
            raise
        finally:
            self.opening -= 1
            if conn.closed:
                self.wake()  # the slot is free again
        if conn.closed:
            raise httpx.ConnectError(f"the connection to {self.host}:{self.port} closed at once", request=request)
        self.open.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.reusable and conn in self.open and (self.waiters or len(self.idle) < self.owner.max_keepalive):
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
            self.wake()  # a waiting request takes it over, rather than it being closed and another opened
            while len(self.idle) > self.owner.max_keepalive and not self.waiters:
                self.discard(self.idle.pop(0))
        else:
            self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        self.lost(conn)

    def lost(self, conn: _Connection) -> None:
        if conn in self.open:
            self.open.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            self.wake()

    def wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self.open):
            self.discard(conn)


class ServiceTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections on asyncio with httptools (see the module's docstring).

    `verify`: True (httpx's default context), False (no verification: tests only) or an `ssl.SSLContext`.
    The limits are per origin and default to httpx's (`httpx.Limits()`).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 100,
        max_keepalive: int = 20,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        if max_connections < 1 or max_keepalive < 0 or keepalive_expiry_s < 0:
            raise ValueError("max_connections >= 1, max_keepalive >= 0, keepalive_expiry_s >= 0")
        self.verify = verify
        self.max_connections = max_connections
        self.max_keepalive = min(max_keepalive, max_connections)
        self.keepalive_expiry_s = keepalive_expiry_s
        self._tls: ssl.SSLContext | None = None
        self._pools: dict[tuple[bytes, bytes, int | None], _Pool] = {}

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            if isinstance(self.verify, ssl.SSLContext):
                self._tls = self.verify
            else:
                self._tls = httpx.create_ssl_context(verify=self.verify)
                self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def _pool(self, url: httpx.URL) -> _Pool:
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            scheme = url.raw_scheme
            if scheme not in _DEFAULT_PORTS:
                raise httpx.UnsupportedProtocol(f"{url.scheme!r} URLs are not served by this transport")
            host = url.raw_host.decode("ascii")
            tls = self._tls_context() if scheme == b"https" else None
            pool = self._pools[key] = _Pool(self, host, url.port or _DEFAULT_PORTS[scheme], tls, host if tls is not None else None)
        return pool

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        method = request.method.encode("ascii")
        raw = request.headers.raw
        lines = [method + b" " + request.url.raw_path + b" HTTP/1.1"]
        lines += [k + b": " + v for k, v in raw]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        # One CR LF per line and none elsewhere, no NUL, token names: nothing can be smuggled into the request.
        n = len(lines) + 1
        if head.count(b"\n") != n or head.count(b"\r") != n or b"\0" in head or b" " in request.url.raw_path:
            raise httpx.LocalProtocolError("CR, LF, NUL or a space in the request line or a header", request=request)
        if not _token(method) or not all(_token(k) for k, _ in raw):
            raise httpx.LocalProtocolError("a method or header name that is not an HTTP token", request=request)
        return head

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool(request.url)
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        head = self._head(request)
        body: bytes | None
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = None  # streamed from request.stream; sent once, so never retried
        for fresh in (False, True):
            conn = await pool.acquire(request, timeouts, fresh=fresh)
            try:
                response = await conn.exchange(request, head, body, timeouts)
            except httpx.TransportError as exc:
                pool.discard(conn)
                if not fresh and conn.dead_on_arrival and body is not None:
                    continue  # a kept connection the server had closed: once more on a new one
                raise exc
            except BaseException:  # cancelled: the connection is out of step
                pool.discard(conn)
                raise
            pool.release(conn)
            return response
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


class _SetCookiesOnly(httpx.Cookies):
    """A client's cookie jar that reads only responses setting a cookie: httpx hands every response to urllib's
    cookie jar (copying its URL and headers), about as much CPU as the rest of the response handling."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def service_client(
    base_url: str,
    *,
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for calls to another service at `base_url` (`timeout_s` for each of connect, read,
    write and pool), on a `ServiceTransport` unless a `transport` is given (tests pass an ASGI transport).
    Cookies work as in any client; only responses without `Set-Cookie` skip the cookie jar."""
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout_s,
        transport=transport if transport is not None else ServiceTransport(verify=verify),
        headers=headers,
    )
    client._cookies = _SetCookiesOnly(client._cookies)  # httpx's own attribute behind `client.cookies`
    return client
