"""Creates a partner's inbox/outbox topics before the first event for it is enqueued (cached per organisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from contracts import topics
from contracts.topics import TopicSpec

EnsureTopics = Callable[[Iterable[TopicSpec]], Awaitable[object]]


class PartnerTopics:
    def __init__(self, ensure_topics: EnsureTopics) -> None:
        self._ensure_topics = ensure_topics
        self._ready: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, org_id: str) -> None:
        if org_id in self._ready:
            return
        async with self._lock:
            if org_id not in self._ready:
                await self._ensure_topics(topics.partner_topics(org_id))
                self._ready.add(org_id)
