"""Kafka plumbing: the broker factory (one principal per service) and topic management."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from contracts.topics import TopicSpec

from .naming import Naming

log = logging.getLogger(__name__)


def make_broker(bootstrap: str, service: str, *, metadata_max_age_ms: int = 30_000) -> KafkaBroker:
    """A FastStream broker whose producer is idempotent with acks=all.

    The client id names the service: it becomes the service's Kafka principal
    once SASL/SCRAM and per-organisation ACLs arrive.
    """
    return KafkaBroker(
        bootstrap,
        client_id=f"lotse-{service}",
        acks="all",
        enable_idempotence=True,
        allow_auto_create_topics=False,
        metadata_max_age_ms=metadata_max_age_ms,
        logger=logging.getLogger(f"lotse.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, client_id: str = "lotse-admin") -> list[str]:
    """Creates the missing topics; existing ones are left as they are. Returns the created names."""
    specs = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in {s.name: s for s in specs}.values() if s.name not in existing]
        if not missing:
            return []
        new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, topic_configs=dict(s.config)) for s in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # another process created them in between
            await admin.create_topics(new)
        log.info("topics created", extra={"topics": [s.name for s in missing]})
        return [s.name for s in missing]
    finally:
        await admin.close()


class TopicAdmin:
    """Creates topics by logical name in this deployment's namespace (e.g. a new partner's inbox)."""

    def __init__(self, bootstrap: str, naming: Naming, *, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.naming = naming
        self.client_id = client_id

    async def ensure(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Creates the missing ones; returns the physical names created."""
        return await ensure_topics(self.bootstrap, [self.naming.spec(s) for s in specs], client_id=self.client_id)
