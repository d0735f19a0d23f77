"""Physical names of one deployment: topics and consumer groups carry the namespace, tables the schema.

`LOTSE_TOPIC_NAMESPACE` lets several districts share a cluster (`kreis-paderborn.`) and lets every
test run in its own namespace. Code speaks in logical names (`lotse.clients.v1`); only the
`Naming` turns them into physical ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.topics import TopicSpec


@dataclass(frozen=True)
class Naming:
    namespace: str
    schema: str

    def topic(self, logical: str) -> str:
        """The physical name of a contract topic in this deployment's namespace."""
        return self.namespace + logical

    def logical(self, physical: str) -> str:
        return physical.removeprefix(self.namespace)

    def topic_pattern(self, logical_regex: str) -> str:
        """Anchored at both ends, so `partner\\..*\\.outbox\\.v1` does not also match its own `.dlq`."""
        body = logical_regex.removeprefix("^").removesuffix("$")
        return "^" + re.escape(self.namespace) + f"(?:{body})$"

    def consumer_group(self, name: str) -> str:
        """One group per service schema and consumer, so test instances never share a group."""
        return f"{self.namespace}lotse-{self.schema}-{name}"

    def spec(self, spec: TopicSpec) -> TopicSpec:
        return TopicSpec(self.topic(spec.name), spec.partitions, spec.config)
