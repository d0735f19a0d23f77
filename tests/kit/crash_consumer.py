"""A kit consumer process that kills itself (SIGKILL) right after its first event's transaction commits.

The kit logs "event processed" after the handler's database transaction has committed and before the
record's offset is committed to Kafka. A logging handler that SIGKILLs the process on that line stops it
exactly in that window: the effect is durable, the offset is not. Used by
tests/kit/test_kit.py::test_killed_between_db_commit_and_offset_commit_kafka_redelivers_and_the_effect_happens_once.

    python -m tests.kit.crash_consumer <topic> <schema>
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from lotse_kit.runtime import Runtime
from tests.kit.conftest import MIGRATIONS, declaration, fast_settings, record_effect


class KillAfterCommit(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "event processed":
            os.kill(os.getpid(), signal.SIGKILL)


async def main(topic: str, schema: str) -> None:
    logging.getLogger("lotse_kit.consumer").addHandler(KillAfterCommit())
    logging.getLogger("lotse_kit.consumer").setLevel(logging.INFO)
    rt = Runtime(declaration(topic, {"lotse.client.registered": record_effect}), fast_settings(), migrations_dir=MIGRATIONS, schema=schema)
    rt.subscribe(None)
    await rt.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
