"""A throw-away PostgreSQL schema for the benchmark scripts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def throwaway_schema(dsn: str, prefix: str = "cowrite_bench_") -> AsyncIterator[str]:
    """A fresh schema's name in the database at ``dsn``, dropped with
    everything in it afterwards."""
    admin = await asyncpg.connect(dsn)
    name = f"{prefix}{uuid.uuid4().hex}"
    await admin.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP SCHEMA "{name}" CASCADE')
        await admin.close()
