from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import migrate
from grantkeeper.adapters.db.store import SqlStore
from tests.e2e.harness import Rig


@pytest.fixture
async def rig(database_url, keyring, sandbox, sandbox_server) -> AsyncIterator[Rig]:
    """The store on SQLite and PostgreSQL (``database_url`` is parametrized), the sandbox over HTTP."""
    engine = make_engine(database_url)
    migrate(engine)
    built = Rig(engine, SqlStore(engine, keyring), sandbox, sandbox_server.token_url)
    yield built
    await built.close()
