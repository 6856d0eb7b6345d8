"""python-socketio's ``socketio.AsyncClient`` (5.18.1) against cowrite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT = 5.0

TRANSPORTS = {
    "websocket-only": (["websocket"], "websocket"),
    "polling-only": (["polling"], "polling"),
    "polling-upgraded-to-websocket": (["polling", "websocket"], "websocket"),
}


class Recorder:
    """Collects events received by one client, with bounded waits."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()

    def add(self, namespace: str, event: str, args: tuple[Any, ...]) -> None:
        self.events.append((namespace, event, args))
        self._changed.set()

    def of(self, event: str, namespace: str = "/") -> list[tuple[Any, ...]]:
        return [args for (ns, ev, args) in self.events if ev == event and ns == namespace]

    async def wait_for(self, event: str, count: int = 1, namespace: str = "/") -> None:
        async with asyncio.timeout(WAIT):
            while len(self.of(event, namespace)) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., tuple[Any, Recorder]]]:
    """Factory of AsyncClients that record every event; all disconnected at teardown."""
    clients: list[Any] = []

    def make(*namespaces: str) -> tuple[Any, Recorder]:
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        recorder = Recorder()
        for ns in namespaces or ("/",):

            async def catch_all(event: str, *args: Any, _ns: str = ns) -> None:
                recorder.add(_ns, event, args)

            client.on("*", catch_all, namespace=ns)

            def callback_please(*args: Any) -> tuple[Any, ...]:
                return ("pong", b"\x09\x09", len(args))

            client.on("callback-please", callback_please, namespace=ns)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        if client.connected:
            await asyncio.wait_for(client.disconnect(), WAIT)


async def connect(client: Any, app: Any, transports: list[str], **kw: Any) -> None:
    await asyncio.wait_for(
        client.connect(
            app.url,
            transports=transports,
            socketio_path="/socket.io/",
            wait_timeout=WAIT,
            **kw,
        ),
        WAIT + 1,
    )


@pytest.mark.parametrize("case", list(TRANSPORTS))
async def test_events_binary_and_acks(
    app: Any, make_client: Any, eventually: Any, case: str
) -> None:
    transports, final_transport = TRANSPORTS[case]
    client, recorder = make_client()
    await connect(client, app, transports)
    sid = client.get_sid("/")
    assert client.transport() == final_transport

    # text event echoed back
    await client.emit("echo", ("hello", {"a": 1, "b": [True, None, "é"]}, 3.5))
    await recorder.wait_for("echo-back")
    assert recorder.of("echo-back")[0] == ("hello", {"a": 1, "b": [True, None, "é"]}, 3.5)

    # binary attachments, nested
    payload = (b"\x01\x02\x03", {"nested": b"\x04\x05", "list": [b"", b"\xff\x00\x80"]})
    await client.emit("echo", payload)
    await recorder.wait_for("echo-back", 2)
    assert recorder.of("echo-back")[1] == payload

    big = bytes(i % 251 for i in range(128 * 1024))
    await client.emit("echo", big)
    await recorder.wait_for("echo-back", 3)
    assert recorder.of("echo-back")[2] == (big,)

    # client -> server acks
    assert await client.call("sum", (2, 3), timeout=WAIT) == 5
    assert list(await client.call("echo-ack", ("x", b"\x07\x08", {"k": [1]}), timeout=WAIT)) == [
        "x",
        b"\x07\x08",
        {"k": [1]},
    ]

    # server -> client ack: the client's handler return value is the ack
    await client.emit("request-callback", ("hi", b"\x05"))
    await recorder.wait_for("callback-result")
    assert recorder.of("callback-result") == [("pong", b"\x09\x09", 2)]
    assert app.callbacks == [("pong", b"\x09\x09", 2)]

    assert client.transport() == final_transport
    await asyncio.wait_for(client.disconnect(), WAIT)
    await eventually(lambda: app.reasons(sid))
    # python-socketio queues DISCONNECT ("41") and then closes the transport without
    # waiting for the queue to flush, so over WebSocket the server may never see it
    assert app.reasons(sid) in (["client namespace disconnect"], ["transport close"])


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_two_namespaces(
    app: Any, make_client: Any, eventually: Any, transports: list[str]
) -> None:
    client, recorder = make_client("/", "/chat")
    await connect(client, app, transports, namespaces=["/", "/chat"], auth={"token": "secret"})
    main_sid, chat_sid = client.get_sid("/"), client.get_sid("/chat")
    assert main_sid != chat_sid

    assert await client.call("whoami", timeout=WAIT) == {"namespace": "/", "sid": main_sid}
    assert await client.call("whoami", namespace="/chat", timeout=WAIT) == {
        "namespace": "/chat",
        "sid": chat_sid,
    }

    await client.emit("echo", "to chat", namespace="/chat")
    await recorder.wait_for("echo-back", namespace="/chat")
    assert recorder.of("echo-back", "/chat") == [("to chat",)]
    assert recorder.of("echo-back", "/") == []

    # a wrong token is refused by the /chat connect handler
    other, _ = make_client("/chat")
    errors: list[Any] = []
    other.on("connect_error", errors.append, namespace="/chat")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(other, app, transports, namespaces=["/chat"], auth={"token": "nope"})
    assert errors == [{"message": "bad token", "data": {"hint": "use the secret"}}]


async def test_rooms(app: Any, make_client: Any) -> None:
    (a, ra), (b, rb), (c, rc) = make_client(), make_client(), make_client()
    for client in (a, b, c):
        await connect(client, app, ["websocket"])
    assert await a.call("join", "r1", timeout=WAIT) is True
    assert await b.call("join", "r1", timeout=WAIT) is True

    await a.call("to-room", ("r1", "m1"), timeout=WAIT)
    await a.call("to-room-except-me", ("r1", "m2"), timeout=WAIT)
    await a.call("to-sid", (c.get_sid("/"), "m3"), timeout=WAIT)
    await b.call("leave", "r1", timeout=WAIT)
    await c.call("to-room", ("r1", "m4"), timeout=WAIT)

    await ra.wait_for("room-msg", 2)
    await rb.wait_for("room-msg", 2)
    await rc.wait_for("direct-msg", 1)
    await asyncio.sleep(0.3)  # nothing else may arrive
    assert ra.of("room-msg") == [("m1",), ("m4",)]
    assert rb.of("room-msg") == [("m1",), ("m2",)]
    assert rc.of("room-msg") == []
    assert rc.of("direct-msg") == [("m3",)]
    assert ra.of("direct-msg") == rb.of("direct-msg") == []
