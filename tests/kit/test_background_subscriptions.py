"""Background subscriptions (no latency goal waits on them) let the broker gather records longer per fetch."""

from __future__ import annotations

from lotse_kit.declaration import Publication, ServiceDeclaration, Subscription
from lotse_kit.runtime import Runtime
from services.consent.entrypoints.consumers import DECLARATION as CONSENT
from services.intake.entrypoints.consumers import DECLARATION as INTAKE
from services.notifications.entrypoints.consumers import DECLARATION as NOTIFICATIONS

from .conftest import MIGRATIONS, fast_settings, record_effect


async def test_a_background_subscription_fetches_with_its_own_wait_and_the_others_with_the_short_one(topic, unique, runtimes):
    declaration = ServiceDeclaration(
        "kittest",
        "Kit test service",
        "Exercises the kit against the real broker and database.",
        subscriptions=(
            Subscription(f"kittest-fast-{unique}", channels=(topic,), handlers={"lotse.client.registered": record_effect}),
            Subscription(
                f"kittest-background-{unique}", channels=(topic,), handlers={"lotse.client.registered": record_effect}, background=True
            ),
        ),
        publications=(Publication(topic, ("lotse.client.registered",)),),
    )
    rt = Runtime(
        declaration,
        fast_settings(consumer_fetch_wait_ms=17, consumer_background_fetch_wait_ms=87),
        migrations_dir=MIGRATIONS,
        schema=f"kt_{unique}",
    )
    rt.subscribe(None)
    await rt.start()
    runtimes.append(rt)
    waits = {c.name.rsplit("-", 2)[-2]: c.subscriber.consumer._fetcher._fetch_max_wait_ms for c in rt.consumers}
    assert waits == {"fast": 17, "background": 87}


def test_only_the_consent_gate_is_on_a_latency_goals_path():
    """The referral reaches the partner's inbox through intake's outbox and the consent gate; no other consumer is on
    that path, so the others may wait longer for fuller batches (docs/architecture.md)."""
    fast = {(d.service, s.name) for d in (INTAKE, CONSENT, NOTIFICATIONS) for s in d.subscriptions if not s.background}
    assert fast == {("consent", "disclosure-gate")}
