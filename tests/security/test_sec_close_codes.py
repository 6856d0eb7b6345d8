"""WebSocket close codes say what happened (RFC 6455 section 7.4.1), and the
log line for the close carries the code, the reason and the one id that names
the connection in every log line (never the Engine.IO sid, a session
credential).

1000 normal (the client's Engine.IO CLOSE), 1001 server shutting down, 1002 a
packet that does not parse, 1007 invalid UTF-8, 1008 a second WebSocket for a
session that already has one, 1009 a message over ``max_payload``, 4000 ping
timeout (private-use range).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest
from sec_support import OP_TEXT, WAIT, RawWs, client_frame, open_ws

from cowrite.config import ServerSettings
from cowrite.server import SocketServer

pytestmark = pytest.mark.timeout(60)

MAX_PAYLOAD = 2048


@pytest.fixture
async def server() -> AsyncIterator[SocketServer]:
    sio = SocketServer(
        ServerSettings(
            host="127.0.0.1",
            port=0,
            max_payload=MAX_PAYLOAD,
            ping_interval=0.3,
            ping_timeout=0.2,
            connect_timeout=5.0,
        )
    )
    sio.on("echo", lambda sid, *args: args)
    await sio.start()
    try:
        yield sio
    finally:
        await sio.stop()


async def connected(port: int, *, answer_pings: bool = True) -> tuple[RawWs, str]:
    """A WebSocket connected to "/"; returns it and the Socket.IO sid."""
    ws = await open_ws(port)
    ws.auto_pong = answer_pings
    assert str(await ws.recv()).startswith("0{")
    ws.send("40")
    reply = await ws.recv()
    assert isinstance(reply, str) and reply.startswith("40"), reply
    sid: str = orjson.loads(reply[2:])["sid"]
    return ws, sid


def closes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "session_closed"]


CASES: dict[str, tuple[Callable[[RawWs], None], int, str]] = {
    "client close packet": (lambda ws: ws.send("1"), 1000, "client close"),
    "engine.io packet that does not parse": (lambda ws: ws.send("abc"), 1002, "parse error"),
    "socket.io packet that does not parse": (lambda ws: ws.send("4abc"), 1002, "parse error"),
    "invalid utf-8": (
        lambda ws: ws.send_raw(client_frame(OP_TEXT, b"42\xff")),
        1007,
        "parse error",
    ),
    "message over max_payload": (
        lambda ws: ws.send("4" + "x" * (MAX_PAYLOAD + 1)),
        1009,
        "payload too large",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_close_code_and_log_line(
    server: SocketServer, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    act, code, reason = CASES[case]
    caplog.set_level(logging.INFO, logger="cowrite")
    ws, sid = await connected(server.port)
    act(ws)
    await ws.wait_closed(WAIT)
    assert ws.close_code == code
    async with asyncio.timeout(WAIT):
        while not closes(caplog):
            await asyncio.sleep(0.01)
    (record,) = closes(caplog)
    assert (record.code, record.reason, record.sid) == (code, reason, sid)  # type: ignore[attr-defined]
    # One id per connection: every line about it names it by the Socket.IO sid.
    named = {getattr(r, "sid", None) for r in caplog.records if hasattr(r, "sid")}
    assert named == {sid}


async def test_ping_timeout_closes_with_4000(
    server: SocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cowrite")
    ws, sid = await connected(server.port, answer_pings=False)
    await ws.wait_closed(WAIT)
    assert (ws.close_code, ws.close_reason) == (4000, "ping timeout")
    (record,) = closes(caplog)
    assert (record.code, record.sid) == (4000, sid)  # type: ignore[attr-defined]


async def test_server_shutdown_closes_with_1001(server: SocketServer) -> None:
    ws, _sid = await connected(server.port)
    await server.stop()
    await ws.wait_closed(WAIT)
    assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")


async def test_second_websocket_after_upgrade_is_accepted_then_closed_with_1008(
    server: SocketServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=polling"
        async with http.get(url) as res:
            sid = orjson.loads((await res.text())[1:])["sid"]
    path = f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
    first = await open_ws(server.port, path)
    first.send("2probe")
    assert await first.recv() == "3probe"
    first.send("5")
    async with asyncio.timeout(WAIT):
        while server.engine.sessions[sid].ws is None:
            await asyncio.sleep(0.005)
    second = await open_ws(server.port, path)  # HTTP 101, not 400
    await second.wait_closed(WAIT)
    assert (second.close_code, second.close_reason) == (1008, "session already has a websocket")
    # The session and its first WebSocket are untouched.
    first.auto_pong = True
    first.send("40")
    assert str(await first.recv()).startswith("40")
    first.send('421["echo",1]')
    assert await first.recv() == "431[1]"


async def test_unknown_sid_and_bad_transport_are_still_refused_with_400(
    server: SocketServer,
) -> None:
    from sec_support import Refused

    for path in (
        "/socket.io/?EIO=4&transport=websocket&sid=nope",
        "/socket.io/?EIO=4&transport=polling",
        "/socket.io/?EIO=3&transport=websocket",
    ):
        with pytest.raises(Refused) as refused:
            await open_ws(server.port, path)
        assert refused.value.status == 400, path


async def test_unknown_event_with_an_ack_is_answered(server: SocketServer) -> None:
    ws, _sid = await connected(server.port)
    ws.send('427["nobody-handles-this",{"a":1}]')
    reply = await ws.recv()
    assert isinstance(reply, str) and reply.startswith("437")
    assert orjson.loads(reply[3:]) == [
        {
            "ok": False,
            "error": {
                "code": "unknown_event",
                "message": "no handler for event 'nobody-handles-this'",
            },
        }
    ]
    ws.send('42["nobody-handles-this"]')  # without an ack id: nothing comes back
    ws.send('428["echo","still here"]')
    assert await ws.recv() == '438["still here"]'


async def test_connect_handler_emits_follow_connect_in_their_own_write_before_a_disconnect(
    server: SocketServer,
) -> None:
    """What a connect handler emits follows CONNECT (CONNECT_EMIT_GAP later, so
    a client that takes one message per read sees both) and still precedes a
    DISCONNECT the application sends meanwhile."""
    server.on("connect", lambda sid, auth: server.emit("hello", 1, to=sid))
    server.on("bye", lambda sid: server.disconnect(sid))
    ws = await open_ws(server.port)
    ws.auto_pong = True
    assert str(await ws.recv()).startswith("0{")
    ws.send("40")
    assert str(await ws.recv()).startswith("40{")
    ws.send('42["bye"]')  # at once: within the gap
    assert await ws.recv() == '42["hello",1]'
    assert await ws.recv() == "41"
