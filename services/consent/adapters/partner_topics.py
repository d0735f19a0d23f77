"""Creates a partner's inbox/outbox topics before the first event for it is enqueued (cached per organisation)."""

from __future__ import annotations

import asyncio

from contracts import topics
from lotse_kit.kafka import TopicAdmin


class PartnerTopics:
    def __init__(self, topic_admin: TopicAdmin) -> None:
        self._topic_admin = topic_admin
        self._ready: set[str] = set()
        self._lock = asyncio.Lock()

    def ready(self, org_id: str) -> bool:
        """Whether this process has made sure the partner's topics exist."""
        return org_id in self._ready

    async def ensure(self, org_id: str) -> None:
        if org_id in self._ready:
            return
        async with self._lock:
            if org_id not in self._ready:
                await self._topic_admin.ensure(topics.partner_topics(org_id))
                self._ready.add(org_id)
