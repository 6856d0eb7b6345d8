"""Several apps on one port: ``HttpServer`` with two Socket.IO apps and an
Engine.IO app mounted under their paths, each with its own settings, driven by
the official clients: socket.io-client 4.8.4 and engine.io-client 6.6.8
(tests/js), python-socketio 5.18.1 and python-engineio 4.15.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import engineio
import pytest
import socketio

from cowrite.config import ServerSettings
from cowrite.errors import ConfigError, LocalError
from cowrite.server import EngineServer, HttpServer, SocketServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

UNKNOWN_EVENT = {
    "ok": False,
    "error": {"code": "unknown_event", "message": "no handler for event 'no-such-event'"},
}


@dataclass
class OnePort:
    http: HttpServer
    main: Any  # conftest.App: Socket.IO at /socket.io/, pingInterval 25 s
    other: Any  # conftest.App: Socket.IO at /custom-path/, pingInterval 0.5 s, its own max_payload
    eio: EngineServer  # Engine.IO echo at /engine.io/
    eio_opened: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"


@pytest.fixture
async def one_port(
    make_settings: Callable[..., ServerSettings], app_on: Callable[[Any], Any]
) -> AsyncIterator[OnePort]:
    http = HttpServer(host="127.0.0.1", port=0)
    main = SocketServer(make_settings(path="/socket.io/"), server=http)
    other = SocketServer(
        make_settings(path="/custom-path/", ping_interval=0.5, ping_timeout=0.4, max_payload=4096),
        server=http,
    )
    main_app, other_app = app_on(main), app_on(other)
    main.on("which-app", lambda sid: "main")
    other.on("which-app", lambda sid: "other")

    def echo(sid: str, data: str | bytes) -> None:
        eio.send(sid, data)

    eio = EngineServer(
        make_settings(path="/engine.io/", ping_interval=2.0, ping_timeout=1.0),
        server=http,
        on_message=echo,
    )
    http.add_route("/healthz", lambda conn, req: conn.respond(200, b"ok"))
    await asyncio.wait_for(http.start(), 5.0)
    main_app.port = other_app.port = http.port
    try:
        yield OnePort(http, main_app, other_app, eio)
    finally:
        await asyncio.wait_for(http.stop(), 10.0)


async def test_each_app_answers_on_its_path_with_its_own_settings(
    one_port: OnePort, http_for: Any, ws_connect: Any
) -> None:
    http = http_for(one_port.http.port)
    intervals = {}
    for path in ("/socket.io/", "/custom-path/", "/engine.io/", "/engine.io"):
        res = await http.get(f"{path}?EIO=4&transport=polling")
        assert res.status == 200, path
        handshake = json.loads(res.text[1:])
        intervals[path] = (handshake["pingInterval"], handshake["maxPayload"])
    assert intervals == {
        "/socket.io/": (25000, 1_000_000),
        "/custom-path/": (500, 4096),
        "/engine.io/": (2000, 1_000_000),
        "/engine.io": (2000, 1_000_000),
    }
    assert (await http.get("/healthz")).text == "ok"
    assert (await http.get("/nothing-here")).status == 404
    # WebSocket upgrades reach every app; a plain route or an unknown path gets 404.
    for path in ("/socket.io/", "/custom-path/", "/engine.io/"):
        ws = await ws_connect(
            f"ws://127.0.0.1:{one_port.http.port}{path}?EIO=4&transport=websocket"
        )
        assert str(await ws.recv()).startswith('0{"sid"')
        await ws.close()
    for path in ("/healthz", "/nothing-here"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await ws_connect(f"ws://127.0.0.1:{one_port.http.port}{path}?EIO=4&transport=websocket")
        assert refused.value.status == 404


@pytest.mark.parametrize(
    "transports",
    [["websocket"], ["polling", "websocket"]],
    ids=["websocket-only", "polling-upgraded-to-websocket"],
)
async def test_official_node_clients_on_one_port(
    one_port: OnePort, run_node: Any, transports: list[str]
) -> None:
    result = await run_node(
        "one_port.mjs",
        {
            "url": one_port.url,
            "transports": transports,
            "sioPaths": ["/socket.io/", "/custom-path/"],
            "eioPath": "/engine.io/",
            "expectUpgrade": len(transports) > 1,
        },
    )
    main, other = result["sio"]
    assert main["whoami"][0]["sid"] in [sid for (_ns, sid, _a) in one_port.main.connects]
    assert other["whoami"][0]["sid"] in [sid for (_ns, sid, _a) in one_port.other.connects]
    for entry in (main, other):
        assert entry["echoAck"] == ["x", b"\x07\x08"]
        assert entry["unknown"] == [UNKNOWN_EVENT]
        assert entry["transport"] == "websocket"
    eio = result["eio"]
    assert eio["messages"] == ["hello engine", b"\x01\x02\x03"]
    assert eio["transportAtEnd"] == "websocket"
    assert eio["firstTransport"] == transports[0]


async def test_official_python_clients_on_one_port(one_port: OnePort) -> None:
    clients = [socketio.AsyncClient(reconnection=False, handle_sigint=False) for _ in range(2)]
    engine = engineio.AsyncClient(handle_sigint=False)
    received: asyncio.Queue[Any] = asyncio.Queue()
    engine.on("message", received.put_nowait)
    try:
        await clients[0].connect(one_port.url, transports=["polling", "websocket"])
        await clients[1].connect(
            one_port.url, socketio_path="custom-path", transports=["websocket"]
        )
        assert await clients[0].call("which-app", timeout=5) == "main"
        assert await clients[1].call("which-app", timeout=5) == "other"
        assert await clients[1].call("sum", (20, 22), timeout=5) == 42
        assert await clients[0].call("no-such-event", 1, timeout=5) == UNKNOWN_EVENT

        await engine.connect(one_port.url, engineio_path="engine.io", transports=["websocket"])
        await engine.send("hello")
        assert await asyncio.wait_for(received.get(), 5) == "hello"
    finally:
        for client in clients:
            await client.disconnect()
        await engine.disconnect()


async def test_stopping_the_http_server_closes_every_app(
    make_settings: Callable[..., ServerSettings], app_on: Callable[[Any], Any], eventually: Any
) -> None:
    http = HttpServer(host="127.0.0.1", port=0)
    apps = [app_on(SocketServer(make_settings(path=path), server=http)) for path in ("/a/", "/b/")]
    await http.start()
    clients = [socketio.AsyncClient(reconnection=False, handle_sigint=False) for _ in apps]
    url = f"http://127.0.0.1:{http.port}"
    for client, path in zip(clients, ("a", "b"), strict=True):
        await client.connect(url, socketio_path=path, transports=["websocket"])
    await asyncio.wait_for(http.stop(), 10.0)
    for app in apps:
        await eventually(lambda app=app: len(app.disconnects) == 1)
        assert [reason for (_ns, _sid, reason) in app.disconnects] == ["server shutting down"]
    for client in clients:
        await client.disconnect()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", http.port)


async def test_mounting_rules(make_settings: Callable[..., ServerSettings]) -> None:
    http = HttpServer(port=0)
    sio = SocketServer(make_settings(path="/socket.io/"), server=http)
    with pytest.raises(ConfigError):
        SocketServer(make_settings(path="/socket.io"), server=http)
    with pytest.raises(ConfigError):
        http.add_route("/socket.io/", lambda conn, req: None)
    http.add_route("/metrics", lambda conn, req: None)
    with pytest.raises(ConfigError):
        EngineServer(make_settings(path="/metrics"), server=http)
    # A mounted app is started and stopped with its HttpServer.
    with pytest.raises(LocalError):
        await sio.start()
    with pytest.raises(LocalError):
        await sio.stop()
