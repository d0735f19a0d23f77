from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.infra import Infra, provide


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    i = provide()
    _INFRA.append(i)
    # Services built inside tests read their settings from the environment.
    os.environ["LOTSE_KAFKA_BOOTSTRAP"] = i.kafka_bootstrap
    os.environ["LOTSE_DATABASE_URL"] = i.database_url
    yield i
    i.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Infra) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(infra: Infra) -> str:
    return infra.database_url


_UNIQUES: set[str] = set()
_INFRA: list[Infra] = []


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, schema and group names, so tests never share state.

    Everything named with it (schemas, roles, topics) is removed when the session ends.
    """
    u = uuid.uuid4().hex[:10]
    _UNIQUES.add(u)
    return u


@pytest.fixture(scope="session", autouse=True)
def _remove_test_leftovers() -> Iterator[None]:
    yield
    if _UNIQUES and _INFRA:
        import asyncio

        from tests.infra import cleanup

        asyncio.run(cleanup(_INFRA[0], sorted(_UNIQUES)))


@pytest.fixture
async def admin_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def topic_namespace(unique: str) -> str:
    """A fresh topic namespace: services built with it read and write only this test's topics."""
    return f"t{unique}."
