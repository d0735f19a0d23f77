"""Rendering throughput of the notification templates (no infrastructure needed).

    .venv/bin/python -m bench.notifications_render [--n 2000]

Renders every routed template in every language and channel from sample events and
reports messages per second; e-mail rendering (text + escaped HTML) dominates.
"""

from __future__ import annotations

import argparse
import time

from lotse_kit.i18n import LANGUAGES
from services.notifications.adapters.templates import Catalog
from services.notifications.domain.model import Channel, scrub
from services.notifications.domain.routing import ROUTES
from services.notifications.handlers.deliveries import render
from services.notifications.tests.test_i18n import DIRECTORY, SAMPLES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="rounds over all templates, languages and channels")
    args = ap.parse_args()
    catalog = Catalog()
    jobs = [
        (r, lang, ch, scrub(r.trigger, SAMPLES[r.trigger].model_dump(mode="json")))
        for r in ROUTES
        for lang in LANGUAGES
        for ch in r.channels
        if ch is not Channel.WEBHOOK
    ]
    for r, lang, ch, payload in jobs:  # warm the template cache
        render(catalog, DIRECTORY, r.template, ch, lang, r.trigger, payload, "jobcenter-pb")
    started = time.perf_counter()
    for _ in range(args.n):
        for r, lang, ch, payload in jobs:
            render(catalog, DIRECTORY, r.template, ch, lang, r.trigger, payload, "jobcenter-pb")
    elapsed = time.perf_counter() - started
    total = args.n * len(jobs)
    print(f"{total} messages in {elapsed:.2f} s: {total / elapsed:,.0f} messages/s ({len(jobs)} template/language/channel combinations)")


if __name__ == "__main__":
    main()
