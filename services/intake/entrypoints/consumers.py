"""Event consumers: partner answers on partner.<org>.outbox.v1 and consent-gate outcomes on lotse.disclosures.v1."""

from __future__ import annotations

from contracts import topics
from contracts.events import PARTNER_ANSWER_TYPES
from lotse_kit.runtime import Runtime

from .. import handlers as h

# Anchored: partner.<org>.outbox.v1 but not its .dlq.
PARTNER_OUTBOX_PATTERN = r"partner\.[a-z0-9][a-z0-9-]*\.outbox\.v1$"


def register(runtime: Runtime, deps: h.Deps) -> None:
    answer = h.make_partner_answer_handler(deps)
    runtime.add_consumer("partner-answers", {t: answer for t in PARTNER_ANSWER_TYPES}, pattern=PARTNER_OUTBOX_PATTERN)
    runtime.add_consumer("disclosures", h.make_disclosure_handlers(deps), topics=[topics.DISCLOSURES])
