"""In-process cache of each client's consents for the decision API, validated by the client's version.

An entry is used only while its version equals the version in `client_versions`,
which is read on every request that finds an entry (one primary-key lookup); a
request that finds none reads the whole snapshot at once. Every change to a
client's consents (grant, withdrawal, expiry, erasure) bumps that version in
the same transaction, so no replica can answer from a snapshot older than the
last committed change. See docs/consent.md, "Decision cache".
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from .repository import ClientSnapshot


class DecisionCache:
    def __init__(self, max_clients: int) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be positive; use no cache instead")
        self.max_clients = max_clients
        self._entries: OrderedDict[UUID, ClientSnapshot] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def peek(self, client_id: UUID) -> ClientSnapshot | None:
        """The cached snapshot, whatever its version, without counting or reordering: the caller checks its
        version against the database and then reports `hit` or `miss`. The caller keeps this object, so a
        concurrent `put` or eviction between the check and the answer cannot swap it."""
        return self._entries.get(client_id)

    def hit(self, client_id: UUID) -> None:
        """The peeked snapshot's version was current and was used."""
        self.hits += 1
        if client_id in self._entries:
            self._entries.move_to_end(client_id)

    def miss(self) -> None:
        self.misses += 1

    def put(self, client_id: UUID, snap: ClientSnapshot) -> None:
        current = self._entries.get(client_id)
        if current is not None and current.version > snap.version:
            return  # a concurrent request already stored a newer snapshot
        self._entries[client_id] = snap
        self._entries.move_to_end(client_id)
        while len(self._entries) > self.max_clients:
            self._entries.popitem(last=False)

    def invalidate(self, client_id: UUID) -> None:
        self._entries.pop(client_id, None)

    def __len__(self) -> int:
        return len(self._entries)
