"""CPU per e-mail of turning a rendered notification into the bytes the SMTP client sends (no infrastructure needed).

    .venv/bin/python -m bench.notifications_bytes [--rounds 5] [--repeat 20]

Every routed e-mail template in every language (as `bench.notifications_render` renders them), each to a client
address, turned into an `Envelope` in two shapes, alternated `--rounds` times in one run (each round `--repeat`
passes over all of them, after a warm-up pass):

- before: `SmtpSender.build` (`email.mime`, compat32 with remembered header folding) flattened by `envelope_of`
  (`BytesGenerator`, as smtplib's `send_message`), the sender's path until issue 14 and still its fallback;
- after: `SmtpSender.envelope`, which writes the bytes directly (`services/notifications/adapters/mailbytes.py`).

Reports this process's CPU (`time.process_time`) per e-mail for each and the ratio before / after.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lotse_kit.clock import ManualClock
from lotse_kit.i18n import LANGUAGES
from services.notifications.adapters.senders import SmtpSender
from services.notifications.adapters.smtp import Envelope, envelope_of
from services.notifications.adapters.templates import Catalog, Rendered
from services.notifications.domain.model import Channel, scrub
from services.notifications.domain.routing import ROUTES
from services.notifications.handlers.deliveries import render
from services.notifications.tests.test_i18n import DIRECTORY, SAMPLES


def emails() -> list[tuple[str, Rendered, str]]:
    catalog = Catalog()
    out = []
    for r in ROUTES:
        if Channel.EMAIL not in r.channels:
            continue
        payload = scrub(r.trigger, SAMPLES[r.trigger].model_dump(mode="json"))
        for i, lang in enumerate(LANGUAGES):
            rendered = render(catalog, DIRECTORY, r.template, Channel.EMAIL, lang, r.trigger, payload, "jobcenter-pb")
            out.append((f"client{i}@client.test", rendered, str(uuid.uuid4())))
    return out


def main(rounds: int, repeat: int) -> dict[str, Any]:
    sender = SmtpSender(host="127.0.0.1", port=1, mail_from="Lotse <no-reply@lotse.invalid>", clock=ManualClock(datetime.now(UTC)))
    batch = emails()

    def before(to: str, rendered: Rendered, message_id: str) -> Envelope:
        return envelope_of(sender.build(to=to, rendered=rendered, message_id=message_id))

    def after(to: str, rendered: Rendered, message_id: str) -> Envelope:
        return sender.envelope(to=to, rendered=rendered, message_id=message_id)

    shapes: dict[str, Callable[[str, Rendered, str], Envelope]] = {"before": before, "after": after}
    cpu = dict.fromkeys(shapes, 0.0)
    size = {name: sum(len(fn(*e).data) for e in batch) / len(batch) for name, fn in shapes.items()}  # and warms up
    for _ in range(rounds):
        for name, fn in shapes.items():
            started = time.process_time()
            for _ in range(repeat):
                for e in batch:
                    fn(*e)
            cpu[name] += time.process_time() - started
    n = rounds * repeat * len(batch)
    per = {name: cpu[name] / n * 1e6 for name in shapes}
    print(f"{len(batch)} e-mails (templates x languages) x {repeat} x {rounds} rounds per shape, alternated")
    print(f"{'':22}{'before':>10}{'after':>10}{'before/after':>14}")
    print(f"{'CPU us / e-mail':22}{per['before']:10.1f}{per['after']:10.1f}{per['before'] / per['after']:14.1f}")
    print(f"{'bytes / e-mail':22}{size['before']:10.0f}{size['after']:10.0f}")
    return {"us_per_email": per, "ratio": per["before"] / per["after"], "bytes": size}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="alternations of before and after")
    p.add_argument("--repeat", type=int, default=20, help="passes over all e-mails per shape and round")
    a = p.parse_args()
    main(a.rounds, a.repeat)
