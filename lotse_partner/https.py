"""The inbox over HTTPS, through Lotse's gateway, for partners that run no Kafka client (pull, as FIT-Connect
receivers do: the partner opens no port).

    GET  /v1/partners/{org}/inbox?after=<cursor>&limit=<n>   -> {"records": [{"cursor", "event"}], "next_cursor"}
    POST /v1/partners/{org}/inbox/acknowledgements {"cursor"} -> 204, acknowledges up to and including it
    POST /v1/partners/{org}/outbox  (application/cloudevents+json or application/cloudevents-batch+json) -> 202

Records are CloudEvents in structured JSON (`contracts.structured`); the consumer, the handler and the answer
helpers are the same as over Kafka. A cursor is acknowledged only after the handler returned, so a record
is fetched again after a crash, exactly like an uncommitted Kafka offset. Every call carries a bearer
token of the organisation's partner system (`OidcToken`); secrets go in form bodies, never in a URL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from contracts import Envelope, topics, validate
from contracts.structured import BATCH, STRUCTURED, from_structured, structured_of

from .consumer import Delivery

TokenSource = Callable[[], Awaitable[str]]


class GatewayError(Exception):
    """The gateway refused a request (4xx, `application/problem+json`): retrying the same request will not help."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {problem.get('title', '')} {problem.get('detail', '')}".strip())
        self.status = status
        self.problem = dict(problem)


class OidcToken:
    """An access token from the identity provider's token endpoint, fetched again shortly before it expires.
    `form` is the grant: `{"grant_type": "client_credentials", "client_id": ..., "client_secret": ...}` in
    production; the local stack's demo partner systems use a password grant."""

    def __init__(self, token_url: str, form: Mapping[str, str], *, http: httpx.AsyncClient | None = None) -> None:
        self.token_url = token_url
        self._form = dict(form)
        self._http = http
        self._token: str | None = None
        self._expires = 0.0

    def __repr__(self) -> str:  # the form holds a secret
        return f"OidcToken({self.token_url!r})"

    async def __call__(self) -> str:
        if self._token is None or time.monotonic() > self._expires - 30:
            async with httpx.AsyncClient(timeout=10) as own:
                r = await (self._http or own).post(self.token_url, data=self._form)
            if r.status_code != 200:
                raise GatewayError(r.status_code, {"title": "token request refused", "detail": r.text[:200]})
            doc = r.json()
            self._token = str(doc["access_token"])
            self._expires = time.monotonic() + float(doc.get("expires_in", 60))
        return self._token


class HttpsTransport:
    """`Transport` over the gateway. Each fetch waits up to `long_poll_s` for a record (the gateway's long poll),
    then `poll_interval_s` before the next when none came. `after` is the cursor to read after (None: after what the organisation
        acknowledged last, as the gateway keeps it); with `commit=False` it acknowledges nothing (a read-only
    listener: the next fetch continues from its own cursor). 5xx answers and network errors are retried with backoff;
        a 4xx raises `GatewayError`."""

    def __init__(
        self,
        base_url: str,
        org: str,
        token: TokenSource,
        *,
        after: str | None = None,
        long_poll_s: float = 10.0,
        poll_interval_s: float = 0.2,
        retries: int = 5,
        commit: bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        topics.partner_inbox(org)  # checks the organisation id
        self.org = org
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.after = after
        self.long_poll_s = long_poll_s
        self.poll_interval_s = poll_interval_s
        self.retries = retries
        self.commits = commit
        self._http = http
        self._own_http = http is None

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=30)

    async def stop(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def fetch(self, max_records: int) -> Sequence[Delivery]:
        params: dict[str, str | int | float] = {"limit": max_records, "wait": self.long_poll_s}
        if self.after is not None:
            params["after"] = self.after
        r = await self._request("GET", f"/v1/partners/{self.org}/inbox", params=params)
        doc = r.json()
        records = doc.get("records") or []
        if doc.get("next_cursor"):
            self.after = str(doc["next_cursor"])
        if not records:
            await asyncio.sleep(self.poll_interval_s)
        return [self._delivery(item) for item in records]

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledges the last cursor: a cursor stands for everything up to and including its record."""
        if not self.commits or not deliveries:
            return
        await self._request("POST", f"/v1/partners/{self.org}/inbox/acknowledgements", body={"cursor": deliveries[-1].position})

    async def send(self, *events: Envelope[Any]) -> None:
        """Posts the answers to the organisation's outbox (one event structured, several as a batch)."""
        if not events:
            return
        if len(events) == 1:
            body: Any = structured_of(events[0])
            ctype = STRUCTURED
        else:
            body = [structured_of(e) for e in events]
            ctype = BATCH
        await self._request("POST", f"/v1/partners/{self.org}/outbox", body=body, content_type=ctype)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        if self._http is None:
            await self.start()
        assert self._http is not None
        for attempt in range(self.retries + 1):
            headers = {"Authorization": f"Bearer {await self.token()}", "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type or "application/json"
            try:
                content = json.dumps(body).encode() if body is not None else None
                r = await self._http.request(method, path, params=params, content=content, headers=headers)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if r.status_code < 400:
                    return r
                if r.status_code < 500:
                    try:
                        problem = r.json()
                    except ValueError:
                        problem = {"title": r.reason_phrase, "detail": r.text[:200]}
                    raise GatewayError(r.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})
                if attempt == self.retries:
                    raise GatewayError(r.status_code, {"title": r.reason_phrase})
            await asyncio.sleep(min(0.5 * 2**attempt, 10))
        raise AssertionError("unreachable")

    @staticmethod
    def _delivery(item: Mapping[str, Any]) -> Delivery:
        cursor = str(item.get("cursor", ""))
        event = item.get("event")
        return Delivery(cursor, lambda: validate(from_structured(event)), {"cursor": cursor, "event": event})
