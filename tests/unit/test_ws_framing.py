"""The WebSocket fast path delivers exactly what websockets' parser would."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from cowrite.errors import CloseReason
from cowrite.server.connection import Connection, ws_frame


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.out += c

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Router:
    def handle_request(self, conn: Connection, request: Any) -> None:
        pass

    def schedule_flush(self, conn: Connection) -> None:
        conn.flush()

    def connection_made(self, conn: Connection) -> None:
        pass

    def connection_lost(self, conn: Connection) -> None:
        pass


class Listener:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed: CloseReason | None = None

    def ws_message(self, conn: Connection, data: str | bytes) -> None:
        self.messages.append(data)

    def ws_closed(self, conn: Connection, reason: CloseReason) -> None:
        self.closed = reason


def websocket() -> tuple[Connection, Listener]:
    conn = Connection(Router(), 1 << 20, 1 << 20)  # type: ignore[arg-type]
    conn.connection_made(Transport())
    conn._request.headers = {"sec-websocket-key": "x" * 24, "sec-websocket-version": "13"}
    listener = Listener()
    assert conn.accept_websocket(listener, 100_000)
    return conn, listener


messages = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=70_000 // 100)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_fast_path_matches_any_segmentation(msgs: list[str | bytes], data: st.DataObject) -> None:
    stream = b""
    for m in msgs:
        if isinstance(m, str):
            stream += Frame(Opcode.TEXT, m.encode()).serialize(mask=True)
        else:
            stream += Frame(Opcode.BINARY, m).serialize(mask=True)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    conn, listener = websocket()
    prev = 0
    for cut in [*cuts, len(stream)]:
        if cut > prev:
            conn.data_received(stream[prev:cut])
            prev = cut
    assert listener.messages == msgs


def test_control_and_fragmented_frames_go_to_websockets() -> None:
    conn, listener = websocket()
    ping = Frame(Opcode.PING, b"hi").serialize(mask=True)
    first = Frame(Opcode.TEXT, b"hel", fin=False).serialize(mask=True)
    rest = Frame(Opcode.CONT, b"lo").serialize(mask=True)
    after = Frame(Opcode.TEXT, b"4x").serialize(mask=True)
    conn.data_received(Frame(Opcode.TEXT, b"4a").serialize(mask=True) + ping + first)
    conn.data_received(rest + after)
    assert listener.messages == ["4a", "hello", "4x"]
    assert conn.transport is not None
    assert b"\x8a\x02hi" in conn.transport.out  # type: ignore[attr-defined]


def test_websockets_protocol_is_built_only_when_a_frame_needs_it() -> None:
    conn, listener = websocket()
    conn.data_received(Frame(Opcode.TEXT, b"4a").serialize(mask=True) * 3)
    assert conn.ws is None  # the data frames went through the fast path
    conn.data_received(Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=True))
    assert conn.ws is not None
    assert listener.messages == ["4a", "4a", "4a"]
    assert conn.close_code == 1000
    assert listener.closed is CloseReason.TRANSPORT_CLOSE


def test_unmasked_or_oversize_frames_close_the_connection() -> None:
    conn, listener = websocket()
    conn.data_received(Frame(Opcode.TEXT, b"4a").serialize(mask=False))
    assert listener.messages == []
    assert listener.closed is not None
    conn2, listener2 = websocket()
    conn2.data_received(Frame(Opcode.BINARY, b"x" * 100_001).serialize(mask=True))
    assert listener2.messages == []
    assert listener2.closed is not None


def test_invalid_utf8_closes() -> None:
    conn, listener = websocket()
    conn.data_received(Frame(Opcode.TEXT, b"\xff\xfe").serialize(mask=True))
    assert listener.messages == []


@given(st.binary(max_size=70_000))
@settings(max_examples=30)
def test_server_frames_parse_back(payload: bytes) -> None:
    for data in (payload, payload.decode("latin-1")):
        raw = ws_frame(data)
        expected = Frame(
            Opcode.BINARY if isinstance(data, bytes) else Opcode.TEXT,
            payload if isinstance(data, bytes) else data.encode(),
        ).serialize(mask=False)
        assert raw == expected
