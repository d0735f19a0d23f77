"""Organisation names and ids from the network configuration (deploy/demo/network.yaml, owned by intake).

Only `organisations[].id` and `.name` are read, so the consent service does not
depend on the rest of intake's schema. Without a file every well-formed
organisation id is accepted and shown as its id.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lotse_kit.network import load_network

log = logging.getLogger(__name__)


class OrgDirectory:
    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = dict(names or {})

    @classmethod
    def from_file(cls, path: Path | None) -> OrgDirectory:
        if path is None or not path.exists():
            log.warning("no network file; organisation ids are not checked", extra={"path": str(path)})
            return cls()
        # The same validating loader as intake: a broken file stops this service at start too.
        return cls({o.id: o.name for o in load_network(path).organisations})

    @property
    def enforced(self) -> bool:
        return bool(self.names)

    def knows(self, org_id: str) -> bool:
        return not self.enforced or org_id in self.names

    def name(self, org_id: str) -> str:
        name = self.names.get(org_id)
        return f"{name} ({org_id})" if name else org_id
