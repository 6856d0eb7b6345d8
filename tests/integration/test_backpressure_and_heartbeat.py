"""Misbehaving raw clients: a slow consumer and a silent (heartbeat-less) one.

* slow consumer: a raw WebSocket client with a tiny receive buffer stops
  reading its socket while the server broadcasts a lot; it must be disconnected
  with reason "slow consumer" while the other clients keep receiving everything.
* heartbeat: a raw WebSocket that never answers PINGs is closed after
  ping_interval + ping_timeout (reason "ping timeout"); a well-behaved client on
  the same server stays connected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from typing import Any

import pytest
import socketio

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

WAIT = 5.0


# --------------------------------------------------------------------------- a raw,
# minimal WebSocket client over a plain socket, so that we control its receive
# buffer and can stop reading at will (aiohttp keeps reading in the background).


class StalledWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str) -> StalledWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), WAIT)
            # a small StreamReader limit: the transport stops reading at 2 x 16 KiB
            reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        await self.writer.drain()

    async def recv_text(self) -> str:
        async with asyncio.timeout(WAIT):
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
        assert b0 & 0x0F == 0x1, f"expected a text frame, got opcode {b0 & 0x0F}"
        return payload.decode()

    async def drain_until_eof(self, timeout: float) -> int:
        """Read (and drop) everything until the server closes; returns the byte count."""
        total = 0
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while chunk := await self.reader.read(1 << 16):
                    total += len(chunk)
        return total

    def close(self) -> None:
        self.writer.transport.abort()


async def python_client(app: Any, received: list[int]) -> Any:
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)

    @client.on("flood")
    async def on_flood(seq: int, payload: str) -> None:
        received.append(seq)

    await asyncio.wait_for(
        client.connect(
            app.url, transports=["websocket"], socketio_path="/socket.io/", wait_timeout=WAIT
        ),
        WAIT + 1,
    )
    return client


async def test_slow_consumer_is_disconnected_while_the_others_keep_receiving(
    start_app: Any, eventually: Any
) -> None:
    limit = 256 * 1024
    app = await start_app(send_buffer_limit=limit, ping_interval=25.0, ping_timeout=20.0)

    slow = await StalledWebSocket.connect(app.port, "/socket.io/?EIO=4&transport=websocket")
    healthy_received: list[list[int]] = [[], []]
    healthy = []
    try:
        assert (await slow.recv_text()).startswith("0{")  # Engine.IO handshake
        await slow.send_text("40")
        connect = await slow.recv_text()
        assert connect.startswith("40{"), connect
        slow_sid = json.loads(connect[2:])["sid"]
        # from here on the slow client never reads again

        for received in healthy_received:
            healthy.append(await python_client(app, received))

        payload = "x" * (32 * 1024)
        batch = 4  # 128 KiB per round: half the limit, so a reader that keeps up is safe
        sent = 0
        async with asyncio.timeout(60):
            for _round in range(2000):  # at most ~250 MiB; the kernel buffers hold a few MiB
                for _ in range(batch):
                    app.server.emit("flood", sent, payload)
                    sent += 1
                # the healthy clients keep up before the next round
                expected = sent
                await eventually(
                    lambda n=expected: all(len(r) == n for r in healthy_received), timeout=10
                )
                if app.reasons(slow_sid):
                    break

        assert app.reasons(slow_sid) == ["slow consumer"]
        # the others got every message, in order, and are still connected
        for received in healthy_received:
            assert received == list(range(sent))
        assert all(client.connected for client in healthy)
        app.server.emit("flood", sent, "after")
        await eventually(lambda: all(len(r) == sent + 1 for r in healthy_received))
        for client in healthy:
            sid = client.get_sid("/")
            assert app.reasons(sid) == []

        # the server closed the slow client's connection
        await slow.drain_until_eof(timeout=20)
    finally:
        slow.close()
        for client in healthy:
            if client.connected:
                await asyncio.wait_for(client.disconnect(), WAIT)


async def test_silent_client_is_closed_after_ping_interval_plus_ping_timeout(
    start_app: Any, ws_connect: Any, eventually: Any
) -> None:
    ping_interval, ping_timeout = 0.3, 0.2
    app = await start_app(ping_interval=ping_interval, ping_timeout=ping_timeout)
    loop = asyncio.get_running_loop()

    # a well-behaved official client on the same server (it answers the pings)
    good = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await asyncio.wait_for(
        good.connect(
            app.url, transports=["websocket"], socketio_path="/socket.io/", wait_timeout=WAIT
        ),
        WAIT + 1,
    )
    try:
        silent = await ws_connect(f"{app.ws_base}/socket.io/?EIO=4&transport=websocket")
        opened_at = loop.time()
        handshake = await silent.recv()
        assert handshake.startswith("0{")
        await silent.send("40")
        connect = await silent.recv()
        assert connect.startswith("40{"), connect
        sid = json.loads(connect[2:])["sid"]

        seen = await silent.wait_closed(timeout=ping_interval + ping_timeout + 2.0)
        elapsed = loop.time() - opened_at
        assert "2" in seen, f"the server never pinged: {seen!r}"
        # PING at ping_interval, no PONG within ping_timeout -> closed
        assert ping_interval + ping_timeout - 0.05 <= elapsed <= ping_interval + ping_timeout + 1.0
        await eventually(lambda: app.reasons(sid))
        assert app.reasons(sid) == ["ping timeout"]

        # the client that answers its pings is still there, several intervals later
        await asyncio.sleep(3 * ping_interval)
        assert good.connected
        assert await good.call("sum", (1, 2), timeout=WAIT) == 3
        assert app.reasons(good.get_sid("/")) == []
    finally:
        if good.connected:
            await asyncio.wait_for(good.disconnect(), WAIT)
