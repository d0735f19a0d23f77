"""A kit consumer process that SIGKILLs itself inside a batch, at a chosen point. Used by
tests/kit/test_batch_consumer.py.

    python -m tests.kit.crash_batch_consumer <topic> <schema> in-handler <n>
        dies while the handler of the n-th event of its first batch runs: the batch's transaction is
        open (n-1 effects written, uncommitted), nothing is committed to Kafka.
    python -m tests.kit.crash_batch_consumer <topic> <schema> after-commit 0
        dies right after the batch's transaction committed and before its offsets are committed
        (the kit logs "event processed" in that window).

A fifth argument `outbox` makes every handler also enqueue one follow-up event (`follow_up`) on the batch's
transaction (tests/kit/test_outbox_batching.py; the test holds the relay's lock, so the rows stay in the outbox).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import asyncpg

from contracts import Envelope
from lotse_kit.runtime import Runtime
from tests.kit.conftest import MIGRATIONS, declaration, fast_settings, record_effect


class KillAfterCommit(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "event processed":
            os.kill(os.getpid(), signal.SIGKILL)


def killing_handler(n: int, effect: Any = record_effect) -> Any:
    calls = 0

    async def handle(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        nonlocal calls
        calls += 1
        await effect(env, conn, deps)
        if calls == n:
            print(f"dying in the handler of event {n}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return handle


async def main(topic: str, schema: str, mode: str, n: int, outbox: bool = False) -> None:
    effect = record_effect
    if outbox:
        from tests.kit.test_outbox_batching import follow_up

        effect = follow_up
    if mode == "after-commit":
        handler = effect
        logging.getLogger("lotse_kit.consumer").addHandler(KillAfterCommit())
        logging.getLogger("lotse_kit.consumer").setLevel(logging.INFO)
    else:
        handler = killing_handler(n, effect)
    rt = Runtime(declaration(topic, {"lotse.client.registered": handler}), fast_settings(), migrations_dir=MIGRATIONS, schema=schema)
    rt.subscribe({"topic": topic, "runtime": rt})
    await rt.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:] == ["outbox"]))
