"""The tests' PostgreSQL: where it is, and a throw-away schema in it.

``COWRITE_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Without a reachable server a test skips, except under ``CI``, where a missing
service is a failure.  ``tests/`` is on ``sys.path`` (the root conftest), so
every suite imports this module by name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

PG_DSN = os.environ.get("COWRITE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def connect_postgres_or_skip() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_DSN, timeout=5.0)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = f"PostgreSQL at {PG_DSN} is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)


@asynccontextmanager
async def throwaway_schema(prefix: str = "cowrite_test_") -> AsyncIterator[str]:
    """A fresh schema's name, dropped with everything in it afterwards."""
    admin = await connect_postgres_or_skip()
    name = f"{prefix}{uuid.uuid4().hex}"
    await admin.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP SCHEMA "{name}" CASCADE')
        await admin.close()
