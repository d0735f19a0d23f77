"""What notifications consumes and produces: the one place its consumers and outbox topics are declared.

One consumer group reads every topic that carries a trigger of the routing table; each trigger is
handled by `handlers.record_notifications`, and `lotse.client.erased` (on lotse.clients.v1, already read for
its triggers) by `handlers.forget_client`. Per batch, `handlers.prepare_triggers` first fetches from intake the
client contacts the batch needs. The service announces each notification's final status.
"""

from __future__ import annotations

from contracts.events import EVENTS
from contracts.topics import NOTIFICATIONS
from lotse_kit.declaration import Publication, ServiceDeclaration, Subscription

from ..handlers import EVENT_HANDLERS, prepare_triggers

DECLARATION = ServiceDeclaration(
    service="notifications",
    title="Lotse notifications",
    description="Multilingual e-mail, SMS and signed webhooks to clients, caseworkers and partner systems, triggered by platform events.",
    subscriptions=(
        Subscription(
            "triggers",
            channels=tuple(sorted({EVENTS[t].topic for t in EVENT_HANDLERS if EVENTS[t].topic})),
            handlers=EVENT_HANDLERS,
            prepare=prepare_triggers,
            background=True,  # e-mails and webhooks: a tenth of a second more is nothing to their readers
        ),
    ),
    publications=(Publication(NOTIFICATIONS, messages=("lotse.notification.delivered", "lotse.notification.failed")),),
)
