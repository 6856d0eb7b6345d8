"""Fixtures of the client suite: a live in-process server and clients that are
closed at teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from client_support import LiveServer, token

from cowrite.client import ClientSettings, CowriteClient

#: Fast reconnection for tests (the defaults are 0.25 s / 10 s).
FAST = ClientSettings(backoff_base=0.05, backoff_cap=0.5, connect_timeout=5.0, close_timeout=2.0)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = LiveServer(tmp_path)
    await live.start()
    yield live
    await live.stop()


@pytest.fixture
async def make_client(server: LiveServer) -> AsyncIterator[Callable[..., CowriteClient]]:
    """``make_client("alice")`` -> a ``CowriteClient`` (not connected) for that user."""
    clients: list[CowriteClient] = []

    def make(user: str, **kw: Any) -> CowriteClient:
        if "token" not in kw and "token_provider" not in kw:
            kw["token"] = token(user)
        kw.setdefault("settings", FAST)
        client = CowriteClient(server.url, **kw)
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await asyncio.wait_for(client.close(), 10.0)
