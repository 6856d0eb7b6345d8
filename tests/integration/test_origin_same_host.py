"""A page served by the server itself may connect without being on the allow-list."""

from __future__ import annotations

import aiohttp

from cowrite.config import ServerSettings
from cowrite.server import SocketServer


async def test_same_origin_allowed_foreign_refused() -> None:
    sio = SocketServer(ServerSettings(port=0, cors_origins=("https://app.example",)))
    await sio.start()
    try:
        url = f"http://127.0.0.1:{sio.port}/socket.io/?EIO=4&transport=polling"
        async with aiohttp.ClientSession() as http:
            own = {"Origin": f"http://127.0.0.1:{sio.port}"}
            async with http.get(url, headers=own) as res:
                assert res.status == 200
            async with http.get(url, headers={"Origin": "http://127.0.0.1:1"}) as res:
                assert res.status == 403
            async with http.get(url, headers={"Origin": "https://app.example"}) as res:
                assert res.status == 200
    finally:
        await sio.stop(timeout=1)
