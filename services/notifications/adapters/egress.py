"""Outbound webhook connections that go only where the egress policy allows (SSRF), and TLS failures told apart.

The rule is `domain.egress.EgressPolicy`. This module applies it where it matters:
- at registration (`EgressGuard.check_url`): a URL whose host is, or resolves to, a refused address is a 422;
- at every connection (`GuardedNetworkBackend`, under the webhook HTTP client): the host name is resolved
  here, every address is checked, and the socket is opened to a checked address, never to a name the
  operating system resolves once more. A name that answered with a public address at registration and
  with 127.0.0.1 now (DNS rebinding) is refused (`RefusedDestination`), and so is one that answers with
  both. TLS still verifies the certificate against the host name of the URL (SNI and hostname check are
  httpcore's, from the URL).

Redirects are not followed and proxies from the environment are not used, so nothing routes around this.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpcore
import httpx

from ..domain.egress import EgressPolicy, parse_ip
from .keys import KeyConfigError

log = logging.getLogger(__name__)

# host, port -> the addresses to try, in order (IP strings).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class RefusedDestination(Exception):
    """The destination is not allowed (loopback, private, link-local, ...); the message says why."""


class Unresolvable(Exception):
    """The host name did not resolve (now): a temporary failure at delivery, no reason to refuse at registration."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressGuard:
    def __init__(self, policy: EgressPolicy, resolver: Resolver | None = None, *, resolve_timeout_s: float = 5.0) -> None:
        self.policy = policy
        self.resolver = resolver or system_resolver
        self.resolve_timeout_s = resolve_timeout_s

    async def addresses(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """The addresses a connection to host:port may use; `RefusedDestination` if the host, or any address
        it resolves to, is refused; `Unresolvable` if it does not resolve."""
        if self.policy.host_allowed(host):
            return await self._resolve(host, port, timeout)
        ip = parse_ip(host)
        if ip is not None:
            why = self.policy.refusal(ip)
            if why is not None:
                raise RefusedDestination(f"{host} is not a public address ({why})")
            return [str(ip)]
        addresses = await self._resolve(host, port, timeout)
        for address in addresses:
            resolved = parse_ip(address.split("%", 1)[0])
            why = "not an IP address" if resolved is None else self.policy.refusal(resolved)
            if why is not None:
                # Any refused address refuses the name: an attacker's DNS may answer with a public and a private one.
                raise RefusedDestination(f"{host} resolves to {address}, not a public address ({why})")
        return addresses

    async def check_url(self, url: str) -> None:
        """At registration: the URL as the webhook client will read it, and what its host resolves to now.
        `ValueError` when the webhook client could not send there, `RefusedDestination` when it must not."""
        try:
            parsed = httpx.URL(url)
            host = parsed.raw_host.decode("ascii")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
            raise ValueError("the URL cannot be sent to (invalid host or port)") from None
        if not host:
            raise ValueError("the URL has no host")
        try:
            await self.addresses(host, port)
        except Unresolvable:
            # Not a way around the rule: every delivery resolves and checks again before it connects.
            log.info("webhook endpoint host does not resolve yet; checked again at delivery", extra={"host": host})

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            addresses = await asyncio.wait_for(self.resolver(host, port), timeout or self.resolve_timeout_s)
        except TimeoutError:
            raise Unresolvable(f"resolving {host} timed out") from None
        except (OSError, UnicodeError):  # socket.gaierror is an OSError
            raise Unresolvable(f"{host} does not resolve") from None
        if not addresses:
            raise Unresolvable(f"{host} does not resolve")
        return list(addresses)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the egress check in front of every TCP connection."""

    def __init__(self, guard: EgressGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.guard.addresses(host, port, timeout)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool whose every connection passes the egress guard.

    httpx does not take a network backend, so the pool it built is replaced by one that has ours
    (tests/test_webhook_security.py fails if an httpx upgrade bypasses it).
    """

    def __init__(self, guard: EgressGuard, ssl_context: ssl.SSLContext, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(guard),
        )


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The public CAs (certifi, as httpx uses), plus the operator's own CA bundle if configured."""
    ctx = httpx.create_ssl_context(trust_env=False)
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError):
            raise KeyConfigError(f"LOTSE_NOTIFICATIONS_WEBHOOK_CA_FILE: {ca_file} cannot be read as PEM CA certificates") from None
    return ctx


def webhook_client(guard: EgressGuard, *, ca_file: Path | None = None, user_agent: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, tls_context(ca_file)),
        headers={"User-Agent": user_agent},
        follow_redirects=False,
        trust_env=False,
    )


# ---------------------------------------------------------------- TLS failures
def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and exceptions carried as arguments (httpcore wraps the
    ssl error as the argument of its ConnectError, and its pool re-raises that `from None`)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [a for a in e.args if isinstance(a, BaseException)]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def tls_failure(exc: BaseException) -> tuple[bool, str] | None:
    """(certificate?, reason) when a connection failed in TLS: a certificate that does not verify is the
    endpoint's configuration and will not heal by retrying; other handshake errors may."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or e.reason or "unknown reason"
            return True, f"TLS certificate verification failed: {str(detail)[:200]}"
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            return False, f"TLS handshake failed ({str(e.reason or type(e).__name__)[:100]})"
    return None
