"""An in-process cowrite SocketServer with a small test application, and a
runner for the Node.js scenario scripts in tests/js.

The application (namespaces ``/`` and ``/chat``; ``/chat`` refuses a connection
whose auth token is not ``"secret"``):

====================  =====================================================
event                 behaviour
====================  =====================================================
echo *args            emit ``echo-back`` *args to the sender
echo-ack *args        acknowledge with *args
sum a, b              acknowledge with a + b
whoami                acknowledge with {"namespace", "sid"}
request-callback *a   emit ``callback-please`` *a to the sender with a
                      callback; the callback's arguments are recorded and
                      emitted back to the sender as ``callback-result``
join / leave room     enter / leave the room; acknowledge with True
to-room room, p       emit ``room-msg`` p to the room; ack True
to-room-except-me     same, skipping the sender
to-sid sid, p         emit ``direct-msg`` p to that sid; ack True
====================  =====================================================
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_TIMEOUT = 30.0


@dataclass
class App:
    server: Any
    port: int
    connects: list[tuple[str, str, Any]] = field(default_factory=list)
    disconnects: list[tuple[str, str, str]] = field(default_factory=list)
    callbacks: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def reasons(self, sid: str) -> list[str]:
        return [reason for (_ns, s, reason) in self.disconnects if s == sid]


def build_app(server: Any) -> App:
    """Register the test application's handlers on ``server``."""
    from cowrite.errors import ConnectionRefused

    app = App(server, 0)

    def register(ns: str) -> None:
        def on_connect(sid: str, auth: Any) -> None:
            if ns == "/chat" and (auth or {}).get("token") != "secret":
                raise ConnectionRefused("bad token", {"hint": "use the secret"})
            app.connects.append((ns, sid, auth))

        def on_disconnect(sid: str, reason: str) -> None:
            app.disconnects.append((ns, sid, reason))

        def on_echo(sid: str, *args: Any) -> None:
            server.emit("echo-back", *args, to=sid, namespace=ns)

        def on_echo_ack(sid: str, *args: Any) -> tuple[Any, ...]:
            return args

        async def on_sum(sid: str, a: Any, b: Any) -> Any:  # an async handler
            await asyncio.sleep(0)
            return a + b

        def on_whoami(sid: str) -> dict[str, str]:
            return {"namespace": ns, "sid": sid}

        def on_request_callback(sid: str, *args: Any) -> None:
            def callback(*ack: Any) -> None:
                app.callbacks.append(ack)
                server.emit("callback-result", *ack, to=sid, namespace=ns)

            server.emit("callback-please", *args, to=sid, namespace=ns, callback=callback)

        def on_join(sid: str, room: str) -> bool:
            server.enter_room(sid, room, namespace=ns)
            return True

        def on_leave(sid: str, room: str) -> bool:
            server.leave_room(sid, room, namespace=ns)
            return True

        def on_to_room(sid: str, room: str, payload: Any) -> bool:
            server.emit("room-msg", payload, to=room, namespace=ns)
            return True

        def on_to_room_except_me(sid: str, room: str, payload: Any) -> bool:
            server.emit("room-msg", payload, to=room, skip_sid=sid, namespace=ns)
            return True

        def on_to_sid(sid: str, target: str, payload: Any) -> bool:
            server.emit("direct-msg", payload, to=target, namespace=ns)
            return True

        handlers: dict[str, Callable[..., Any]] = {
            "connect": on_connect,
            "disconnect": on_disconnect,
            "echo": on_echo,
            "echo-ack": on_echo_ack,
            "sum": on_sum,
            "whoami": on_whoami,
            "request-callback": on_request_callback,
            "join": on_join,
            "leave": on_leave,
            "to-room": on_to_room,
            "to-room-except-me": on_to_room_except_me,
            "to-sid": on_to_sid,
        }
        for event, fn in handlers.items():
            server.on(event, namespace=ns)(fn)

    register("/")
    register("/chat")
    return app


@pytest.fixture
def app_on() -> Callable[[Any], App]:
    """``app_on(server)`` registers the test application on a (mounted) server."""
    return build_app


@pytest.fixture
def start_app(
    make_settings: Callable[..., Any],
    start_server: Callable[[Any], Awaitable[Any]],
) -> Callable[..., Awaitable[App]]:
    """``await start_app(**settings_overrides)`` -> a running ``App``."""

    async def start(**overrides: Any) -> App:
        from cowrite.server import SocketServer

        server = SocketServer(make_settings(**overrides))
        app = build_app(server)
        await start_server(server)
        app.port = server.port
        return app

    return start


@pytest.fixture
async def app(start_app: Callable[..., Awaitable[App]]) -> App:
    return await start_app()


def decode_bin(value: Any) -> Any:
    """Undo the ``{"$bin": base64}`` encoding of tests/js/lib.mjs."""
    if isinstance(value, list):
        return [decode_bin(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return base64.b64decode(value["$bin"])
        return {k: decode_bin(v) for k, v in value.items()}
    return value


@pytest.fixture
def run_node() -> Callable[..., Awaitable[Any]]:
    """``await run_node("basic.mjs", {...})`` -> the script's decoded result."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (see scripts/ensure-system-deps.sh)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("tests/js/node_modules is missing: run `make node-deps`")

    async def run(script: str, cfg: dict[str, Any], timeout: float = NODE_TIMEOUT) -> Any:
        cfg = {"hardTimeout": int((timeout - 2) * 1000), **cfg}
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / script),
            json.dumps(cfg),
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{script} did not finish within {timeout} s") from None
        lines = out.decode("utf-8", "replace").strip().splitlines()
        stderr = err.decode("utf-8", "replace")
        assert lines, f"{script} printed nothing (exit {proc.returncode}); stderr:\n{stderr}"
        report = json.loads(lines[-1])
        assert report["ok"], f"{script} failed: {report['error']}\nstderr:\n{stderr}"
        return decode_bin(report["result"])

    return run
