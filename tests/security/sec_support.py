"""What the security and robustness tests share: a cheap raw client, an
in-process cowrite application with any limits, and the state that must
return to its starting level once every client is gone.

``RawWs`` is a WebSocket client on an ``asyncio.Protocol`` (RFC 6455 framing
written here, unmasking and masking with websockets' C ``apply_mask``), so a
test can send what no well-behaved client would: any opcode, unmasked frames,
reserved bits, truncated frames.  ``RawSio`` speaks just enough Engine.IO v4 /
Socket.IO v5 over it for a test to connect, call an event and leave; it is
cheap enough to open tens of thousands of connections (``churn.py``).

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import struct
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from websockets.speedups import apply_mask

SECRET = "security-test-secret-" + "s" * 32  # HS256 needs at least 32 bytes
WAIT = 5.0
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
POLL_PATH = "/socket.io/?EIO=4&transport=polling"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def token(user_id: str, name: str | None = None, **claims: Any) -> str:
    from cowrite.auth import AuthSettings, mint_token

    return mint_token(
        AuthSettings(secret=SECRET), user_id=user_id, name=name or user_id, ttl=3600, **claims
    )


# -- RFC 6455 client frames ---------------------------------------------------------


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame (section 5.2); ``mask=False`` makes an illegal unmasked one."""
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


class Refused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body


class Closed(Exception):
    """The WebSocket closed while a message was expected."""


class RawWs(asyncio.Protocol):
    """A WebSocket client connection; messages are queued in arrival order."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self.response: asyncio.Future[tuple[int, dict[str, str], bytes]] = loop.create_future()
        self.messages: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._fragments: list[bytes] | None = None
        self._fragment_op = 0
        # Answer Engine.IO PINGs ("2") at once instead of queueing them, so an
        # idle connection that nobody reads survives the heartbeat.
        self.auto_pong = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.response.done():
            self.response.set_exception(ConnectionError("closed before the response"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ")[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if status != 101:
                length = int(headers.get("content-length", "0"))
                if len(self._buf) < end + 4 + length:
                    return
                body = bytes(self._buf[end + 4 : end + 4 + length])
                if not self.response.done():
                    self.response.set_result((status, headers, body))
                return
            del self._buf[: end + 4]
            self._upgraded = True
            if not self.response.done():
                self.response.set_result((status, headers, b""))
        self._frames()

    def _frames(self) -> None:
        buf = self._buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if b1 & 0x80:
                pos += 4  # a masked server frame is illegal; read past it anyway
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode("utf-8", "replace")
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._wake()
            return
        if opcode == OP_PING:
            self.send_frame(OP_PONG, payload)
            return
        if opcode == OP_PONG:
            return
        if opcode in (OP_TEXT, OP_BINARY) and not fin:
            self._fragments, self._fragment_op = [payload], opcode
            return
        if opcode == OP_CONT:
            if self._fragments is None:
                return
            self._fragments.append(payload)
            if not fin:
                return
            payload, opcode = b"".join(self._fragments), self._fragment_op
            self._fragments = None
        if self.auto_pong and opcode == OP_TEXT and payload == b"2":
            self.send("3")
            return
        self.messages.append(payload.decode() if opcode == OP_TEXT else payload)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- API -------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_frame(self, opcode: int, payload: bytes, **kw: Any) -> None:
        self.send_raw(client_frame(opcode, payload, **kw))

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.send_frame(OP_TEXT, message.encode())
        else:
            self.send_frame(OP_BINARY, message)

    async def recv(self, timeout: float = WAIT) -> str | bytes:
        """The next message; ``Closed`` once the connection is closed and drained."""
        async with asyncio.timeout(timeout):
            while not self.messages:
                if self.closed:
                    raise Closed(f"closed (code {self.close_code})")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        return self.messages.popleft()

    async def wait_closed(self, timeout: float = WAIT) -> None:
        """Read (and drop) messages until the server closes the connection."""
        async with asyncio.timeout(timeout):
            while not self.closed:
                self.messages.clear()
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_tcp(self) -> None:
        """End the TCP connection without a close frame (after what is queued)."""
        if self.transport is not None:
            self.transport.close()

    def close(self, code: int = 1000) -> None:
        """Send a close frame and end the TCP connection (no wait for the reply)."""
        if self.transport is not None and not self.transport.is_closing():
            self.send_frame(OP_CLOSE, struct.pack("!H", code))
            self.transport.close()


async def open_ws(
    port: int,
    path: str = EIO_PATH,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = WAIT,
) -> RawWs:
    """Open a WebSocket to ``127.0.0.1:port``; ``Refused`` when the answer is not 101."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, ws = await loop.create_connection(RawWs, "127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        ws.send_raw(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{extra}\r\n"
            ).encode()
        )
        status, got, body = await ws.response
    if status != 101:
        ws.abort()
        raise Refused(status, got, body)
    return ws


# -- Engine.IO / Socket.IO over RawWs -------------------------------------------------


class RawSio:
    """One Socket.IO client on the main namespace over a ``RawWs``."""

    def __init__(self, ws: RawWs) -> None:
        self.ws = ws
        ws.auto_pong = True
        self.eio_sid = ""
        self._ack = 0
        self.events: list[tuple[str, list[Any]]] = []
        self.acks: dict[int, list[Any]] = {}
        #: Socket.IO packets other than events and acks (``"1"``: DISCONNECT).
        self.packets: list[str] = []
        self.connect_reply: Any = None

    @classmethod
    async def open(cls, port: int, *, timeout: float = WAIT, **kw: Any) -> RawSio:
        sio = cls(await open_ws(port, timeout=timeout, **kw))
        first = await sio.ws.recv(timeout)
        assert isinstance(first, str) and first.startswith("0{"), first
        sio.eio_sid = orjson.loads(first[1:])["sid"]
        return sio

    def _take(self, message: str | bytes) -> str | None:
        """Handle one message; return Socket.IO packet text that is not an event/ack."""
        if message == "2":
            self.ws.send("3")
            return None
        if isinstance(message, bytes) or not message.startswith("4"):
            return message if isinstance(message, str) else None
        packet = message[1:]
        if packet.startswith("2["):
            data = orjson.loads(packet[1:])
            self.events.append((data[0], data[1:]))
            return None
        if packet.startswith("3"):
            i = 1
            while packet[i].isdigit():
                i += 1
            self.acks[int(packet[1:i])] = orjson.loads(packet[i:])
            return None
        self.packets.append(packet)
        return packet

    async def connect(self, auth: Any, timeout: float = WAIT) -> Any:
        """CONNECT to "/"; returns the CONNECT (``"0{...}"``) or CONNECT_ERROR packet."""
        self.ws.send("40" + orjson.dumps(auth).decode())
        async with asyncio.timeout(timeout):
            while True:
                packet = self._take(await self.ws.recv(timeout))
                if packet is not None and packet[:1] in ("0", "4"):
                    self.connect_reply = packet
                    return packet

    async def connect_ok(self, user: str, timeout: float = WAIT) -> None:
        reply = await self.connect({"token": token(user)}, timeout)
        assert reply.startswith("0{"), reply

    def emit(self, event: str, *args: Any) -> int:
        """Emit with an ack id; returns the id."""
        self._ack += 1
        self.ws.send(f"42{self._ack}" + orjson.dumps([event, *args]).decode())
        return self._ack

    async def wait_ack(self, ack_id: int, timeout: float = WAIT) -> Any:
        async with asyncio.timeout(timeout):
            while ack_id not in self.acks:
                self._take(await self.ws.recv(timeout))
        args = self.acks.pop(ack_id)
        return args[0] if len(args) == 1 else args

    async def call(self, event: str, *args: Any, timeout: float = WAIT) -> Any:
        return await self.wait_ack(self.emit(event, *args), timeout)


# -- the application under test -------------------------------------------------------


@dataclasses.dataclass
class Running:
    """A started cowrite application (``cowrite.app.App``) and where it listens."""

    app: Any

    @property
    def port(self) -> int:
        return int(self.app.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self) -> Any:
        return self.app.server.engine


async def start_app(
    data_dir: Path,
    *,
    server: dict[str, Any] | None = None,
    collab: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Running:
    """``build_app`` over a SQLite file in ``data_dir``, on an ephemeral port.

    ``server`` overrides ``ServerSettings`` fields; ``collab`` overrides
    ``CollabSettings`` fields (load_app_settings has no knob for the rate
    limits, so they are replaced on the frozen settings)."""
    from cowrite.app import build_app
    from cowrite.backends.store_sqlite import SqliteStore
    from cowrite.config import load_app_settings

    settings = load_app_settings(
        environ={
            "COWRITE_AUTH_SECRET": SECRET,
            "COWRITE_CORS_ORIGINS": "http://allowed.example",
            **(environ or {}),
        },
        server_overrides={"host": "127.0.0.1", "port": 0, "gc_freeze": False, **(server or {})},
        store=f"sqlite:///{data_dir}/unused.db",
        data_dir=str(data_dir),
        dev_mode=False,
    )
    if collab:
        settings = dataclasses.replace(
            settings, collab=dataclasses.replace(settings.collab, **collab)
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, store=SqliteStore(str(data_dir / "cowrite.db")))
    await asyncio.wait_for(app.start(), 15.0)
    return Running(app)


def live_state(running: Running) -> dict[str, int]:
    """Everything that grows with clients and must shrink back when they leave."""
    app = running.app
    server = app.server
    engine = server.engine
    service = app.service
    state = {
        "engine.sessions": len(engine.sessions),
        "engine.connections": len(engine.connections),
        "admission.total": engine.admission.total,
        "admission.handshaking": engine.admission.handshaking,
        "admission.per_ip": len(engine.admission._per_ip),
        "sio.sockets": len(server._sockets),
        "sio.namespace_sockets": sum(len(s) for s in server._namespace_sockets.values()),
        "sio.rooms": server.room_count(),
        "sio.tasks": len(server._tasks),
        "service.connections": service.connection_count,
        "service.documents": service.document_count,
        "service.presence_dirty": len(service._relay.dirty),
        "engine.timers": len(engine._timers),
    }
    count = getattr(app.presence, "document_count", None)
    if count is not None:
        state["presence.documents"] = count()
    return state


async def wait_state(
    running: Running,
    expected: dict[str, int],
    *,
    timeout: float = 10.0,
    poll: float = 0.05,
    ignore: tuple[str, ...] = ("engine.timers",),
) -> dict[str, int]:
    """Wait until ``live_state`` equals ``expected`` (except ``ignore``); assert it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        now = {k: v for k, v in live_state(running).items() if k not in ignore}
        want = {k: v for k, v in expected.items() if k not in ignore}
        if now == want or loop.time() > deadline:
            break
        await asyncio.sleep(poll)
    diff = {k: (want.get(k), v) for k, v in now.items() if want.get(k) != v}
    assert not diff, f"state did not return to its starting level (expected, now): {diff}"
    return now


async def http_get(port: int, path: str, *, timeout: float = WAIT) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


class ErrorRecords(logging.Handler):
    """Collects every log record at ERROR or above (handler exceptions, failed tasks)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def describe(self) -> str:
        out = []
        for r in self.records[:5]:
            text = f"{r.name}: {r.getMessage()}"
            if r.exc_info and r.exc_info[1] is not None:
                text += f" [{type(r.exc_info[1]).__name__}: {r.exc_info[1]}]"
            out.append(text)
        return "; ".join(out)

    def clear(self) -> None:
        self.records.clear()

    def check(self) -> None:
        assert not self.records, f"{len(self.records)} ERROR log records: {self.describe()}"


def rss_kib() -> int:
    """This process's resident set size (VmRSS), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")
