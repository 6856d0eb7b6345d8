"""Fixtures of the security and robustness suite: in-process cowrite
applications with chosen limits (``sec_support.start_app``), stopped at
teardown, and a capture of every ERROR log record."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The official-client driver of the end-to-end suite (python-socketio) is reused here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from sec_support import ErrorRecords, Running, start_app


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """``await make_app(server={...}, collab={...})`` -> a started application."""
    started: list[Running] = []

    async def make(**kw: Any) -> Running:
        running = await start_app(tmp_path / f"app{len(started)}", **kw)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        await asyncio.wait_for(running.app.stop(), 15.0)


@pytest.fixture
def error_log() -> Iterator[ErrorRecords]:
    """ERROR records logged anywhere (root logger) while the test runs."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Run this suite on uvloop, the loop ``cowrite serve`` runs on (and the
    faster one: the churn test is bounded in time)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
