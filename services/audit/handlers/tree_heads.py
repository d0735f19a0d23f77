"""Signing tree heads: the log's signed commitment to its size and root at a moment."""

from __future__ import annotations

import logging

from ..adapters import metrics
from ..domain import merkle
from ..domain.commands import SignTreeHead, SignTreeHeadIfGrown
from ..domain.tree_head import TreeHead, epoch_ms, sign
from .deps import Deps

log = logging.getLogger(__name__)


async def sign_tree_head(cmd: SignTreeHead, deps: Deps) -> TreeHead:
    """Signs the current size and root. Any replica may do it: heads are independent statements."""
    return await _sign(deps, await deps.repo.size(), cmd.requested_by)


async def sign_tree_head_if_grown(cmd: SignTreeHeadIfGrown, deps: Deps) -> TreeHead | None:
    """Signs a head if the log grew since the latest one, else nothing."""
    latest = await deps.repo.latest_tree_head()
    size = await deps.repo.size()
    if latest is not None and latest.tree_size == size:
        return None
    return await _sign(deps, size, None)


async def _sign(deps: Deps, size: int, requested_by: str | None) -> TreeHead:
    # The root needs popcount(size) stored nodes; right after an append they are in the node cache.
    root = await deps.repo.compute(lambda get: merkle.root(size, get))
    head = sign(deps.signing_key, size, epoch_ms(deps.clock.now()), root)
    await deps.repo.add_tree_head(head, requested_by)
    metrics.tree_head_signed(size, head.timestamp_ms / 1000)
    log.info("tree head signed", extra={"tree_size": size, "requested_by": requested_by})
    return head
