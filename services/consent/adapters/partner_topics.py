"""Makes sure a partner's inbox exists before the first event for it is enqueued (cached per organisation).

Under the broker's ACLs `lotse admin provision` creates it and this only checks; on an open development
broker (LOTSE_KAFKA_CREATE_TOPICS=true) it creates it. The outbox is the partner's and intake's business."""

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
                inbox = topics.partner_inbox(org_id)
                await self._topic_admin.ensure([t for t in topics.partner_topics(org_id) if t.name == inbox])
                self._ready.add(org_id)
