"""Admission limits on a real server: refused before any session exists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from cowrite.config import ServerSettings
from cowrite.server import SocketServer


@pytest.fixture
async def limited() -> AsyncIterator[SocketServer]:
    sio = SocketServer(
        ServerSettings(
            port=0,
            per_ip_exempt=(),
            per_ip_connections=3,
            per_ip_rate=1000,
            per_ip_burst=1000,
            max_connections=5,
        )
    )
    await sio.start()
    yield sio
    await sio.stop(timeout=1)


async def test_per_ip_concurrent_limit_and_instance_cap(limited: SocketServer) -> None:
    base = f"http://127.0.0.1:{limited.port}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(base) as res:
                assert res.status == 200
        async with http.get(base) as res:
            assert res.status == 429
            assert res.headers["Retry-After"]
        assert len(limited.engine.sessions) == 3  # nothing allocated for the refused one
        # The WebSocket upgrade is refused the same way (no 101).
        ws_url = f"ws://127.0.0.1:{limited.port}/socket.io/?EIO=4&transport=websocket"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url)
        assert refused.value.status == 429


async def test_rate_of_new_connections() -> None:
    sio = SocketServer(ServerSettings(port=0, per_ip_exempt=(), per_ip_rate=1, per_ip_burst=2))
    await sio.start()
    try:
        base = f"http://127.0.0.1:{sio.port}/socket.io/?EIO=4&transport=polling"
        statuses = []
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                async with http.get(base) as res:
                    statuses.append(res.status)
        assert statuses[:2] == [200, 200]
        assert 429 in statuses[2:]
    finally:
        await sio.stop(timeout=1)


async def test_instance_cap_answers_503() -> None:
    sio = SocketServer(ServerSettings(port=0, max_connections=2))
    await sio.start()
    try:
        base = f"http://127.0.0.1:{sio.port}/socket.io/?EIO=4&transport=polling"
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.get(base) as res:
                    assert res.status == 200
            async with http.get(base) as res:
                assert res.status == 503
                assert int(res.headers["Retry-After"]) >= 1
    finally:
        await sio.stop(timeout=1)
