"""Helpers of the server API suite: a real HTTP client (aiohttp) for
``/api/<method>`` and python-socketio clients that record their events.
Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

KEY = "api-test-key-" + "k" * 24
SECRET = "api-test-secret-" + "s" * 32
WAIT = 10.0


def token(user_id: str, secret: str = SECRET) -> str:
    """A token without a docs claim: the stored roles apply."""
    from cowrite.auth import AuthSettings, mint_token

    return mint_token(AuthSettings(secret=secret), user_id=user_id, name=user_id.title())


@dataclass
class Api:
    """``POST /api/<method>`` against one base URL."""

    session: aiohttp.ClientSession
    base: str
    key: str = KEY

    async def raw(
        self,
        method: str,
        body: bytes | str,
        *,
        headers: dict[str, str] | None = None,
        verb: str = "POST",
    ) -> tuple[int, Any, Any]:
        hdrs = {"X-API-Key": self.key, "Content-Type": "application/json"}
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v}
        async with self.session.request(
            verb, f"{self.base}/api/{method}", data=body, headers=hdrs
        ) as resp:
            data = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            parsed = (
                await resp.json(content_type=None) if ctype.startswith("application/json") else data
            )
            return resp.status, parsed, resp.headers

    async def call(self, method: str, params: Any = None, **kw: Any) -> tuple[int, Any]:
        # The standard library's encoder: integers of any size, as any client may send.
        body = json.dumps({} if params is None else params)
        status, answer, _ = await self.raw(method, body, **kw)
        return status, answer

    async def ok(self, method: str, params: Any = None) -> dict[str, Any]:
        status, body = await self.call(method, params)
        assert status == 200, (method, status, body)
        result: dict[str, Any] = body["result"]
        return result


@dataclass
class Client:
    """A python-socketio client and the events it got."""

    sio: socketio.AsyncClient
    events: dict[str, list[Any]] = field(default_factory=dict)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def got(self, event: str) -> list[Any]:
        return self.events.get(event, [])

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {self.events}") from None


async def connect_client(url: str, user_id: str, secret: str = SECRET) -> Client:
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    client = Client(sio)
    for event in ("remote-edit", "server-disconnect", "access-revoked", "error", "user-joined"):

        def record(*args: Any, _event: str = event) -> None:
            client.events.setdefault(_event, []).append(args[0] if len(args) == 1 else args)

        sio.on(event, record)

    def gone(*_args: Any) -> None:
        client.disconnected.set()

    sio.on("disconnect", gone)
    await asyncio.wait_for(
        sio.connect(
            url, auth={"token": token(user_id, secret)}, transports=["websocket"], wait_timeout=5
        ),
        WAIT,
    )
    return client
