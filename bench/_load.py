"""The open-loop load generator: a minimal keep-alive HTTP/1.1 client and a fixed-rate schedule.

Request i of a step is due at t0 + i / rate, whatever happened to the requests before it, and its
latency is measured from that due time (not from when it was actually sent): a server or client
that falls behind shows up in the figures instead of slowing the offer down (no coordinated
omission). A general-purpose client (httpx) costs about a millisecond of CPU per request, which on
two cores would be measured as the server's; this one costs a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
_CHUNKED = re.compile(rb"(?i)\r\ntransfer-encoding: *chunked")
_CLOSE = re.compile(rb"(?i)\r\nconnection: *close")


class HttpError(Exception):
    pass


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one host; opened on demand up to `size`, then requests queue.

    uvicorn closes connections idle for 5 s; connections idle for longer than `max_idle_s` are not
    reused, so a request is never written into a connection the server is closing (a POST must not be
    retried blindly)."""

    def __init__(self, host: str, port: int, size: int = 256, max_idle_s: float = 3.0) -> None:
        self.host, self.port, self.size, self.max_idle_s = host, port, size, max_idle_s
        self._idle: list[_Conn] = []
        self._open = 0
        self._slots = asyncio.Semaphore(size)

    async def _acquire(self) -> _Conn:
        await self._slots.acquire()
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if now - c.idle_since < self.max_idle_s and not c.reader.at_eof():
                return c
            c.writer.close()
            self._open -= 1
        try:
            r, w = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self._slots.release()
            raise
        self._open += 1
        return _Conn(r, w)

    def _release(self, c: _Conn, reusable: bool) -> None:
        if reusable:
            c.idle_since = time.monotonic()
            self._idle.append(c)
        else:
            c.writer.close()
            self._open -= 1
        self._slots.release()

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        c = await self._acquire()
        ok = False
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            for k, v in headers.items():
                head += f"{k}: {v}\r\n"
            if body is not None:
                head += f"Content-Length: {len(body)}\r\n"
            c.writer.write(head.encode() + b"\r\n" + (body or b""))
            resp = await c.reader.readuntil(b"\r\n\r\n")
            status = int(resp[9:12])
            if _CHUNKED.search(resp):
                payload = b""
                while True:
                    size = int((await c.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                    chunk = await c.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    payload += chunk[:-2]
            else:
                m = _CONTENT_LENGTH.search(resp)
                payload = await c.reader.readexactly(int(m.group(1))) if m else b""
            ok = not _CLOSE.search(resp)
            return status, payload
        finally:
            self._release(c, ok)

    async def close(self) -> None:
        for c in self._idle:
            c.writer.close()
        self._idle.clear()


@dataclass
class Sent:
    """One request of the schedule."""

    i: int
    due_wall: float  # epoch seconds (comparable with PostgreSQL timestamps and other processes' clocks)
    latency_ms: float | None = None  # from the due time to the complete response
    status: int | None = None
    body: bytes = b""
    error: str | None = None
    done_wall: float | None = None


@dataclass
class Schedule:
    rate: float
    seconds: float
    sent: list[Sent]
    started_wall: float
    elapsed_s: float  # from the first due time to the last response
    shed: int  # requests not sent because max_in_flight was reached (counted as errors)


async def drive(
    pool: HttpPool,
    rate: float,
    seconds: float,
    make: Callable[[int], tuple[str, bytes, dict[str, str]]],
    *,
    max_in_flight: int = 2000,
    timeout_s: float = 30.0,
) -> Schedule:
    """Offers `rate` POSTs per second for `seconds`, open-loop. `make(i)` gives path, body and headers."""
    total = max(1, int(rate * seconds))
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution only
    t0 = clock() + 0.02
    wall0 = time.time() + (t0 - clock())
    sent: list[Sent] = []
    in_flight = 0
    shed = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(s: Sent, due: float, path: str, body: bytes, headers: dict[str, str]) -> None:
        nonlocal in_flight
        try:
            status, payload = await asyncio.wait_for(pool.request("POST", path, body, headers), timeout_s)
            s.status, s.body = status, payload
            s.latency_ms = (clock() - due) * 1000
        except TimeoutError:
            s.error = f"timeout after {timeout_s:.0f} s"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            s.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            s.done_wall = time.time()
            in_flight -= 1

    # The generator must not pause itself: no collector passes while it measures (bounded run).
    gc.collect()
    gc.disable()
    try:
        for i in range(total):
            due = t0 + i / rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            s = Sent(i, wall0 + i / rate)
            sent.append(s)
            if in_flight >= max_in_flight:
                s.error = "shed: too many requests in flight"
                shed += 1
                continue
            path, body, headers = make(i)
            in_flight += 1
            tasks.append(asyncio.create_task(one(s, due, path, body, headers)))
        if tasks:
            await asyncio.wait(tasks)
    finally:
        gc.enable()
    last = max((s.done_wall for s in sent if s.done_wall), default=time.time())
    return Schedule(rate, seconds, sent, wall0, max(last - wall0, 1e-9), shed)


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no data."""
    if not xs:
        return None
    ys = sorted(xs)
    k = max(0, min(len(ys) - 1, int(-(-p * len(ys) // 100)) - 1))
    return ys[k]


def summary(xs: list[float]) -> dict[str, float | int | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "n": len(xs),
        "p50": r(percentile(xs, 50)),
        "p90": r(percentile(xs, 90)),
        "p99": r(percentile(xs, 99)),
        "max": r(max(xs) if xs else None),
    }
