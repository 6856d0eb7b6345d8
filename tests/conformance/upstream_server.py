"""The server the official protocol test suites run against, verbatim.

Built with cowrite's public library API only: one ``HttpServer`` on one port,
an Engine.IO echo app at ``/engine.io/`` (what socketio/engine.io-protocol's
``test-suite/`` expects) and a Socket.IO app at ``/socket.io/`` (what
socketio/socket.io-protocol's ``test-suite/`` expects): the reference
configuration of each repository's README (pingInterval 300 ms, pingTimeout
200 ms, maxPayload 1 000 000, any origin; Socket.IO connectTimeout 1 s).

    python tests/conformance/upstream_server.py [--port 3000] [--no-uvloop]

The suites hard-code ``http://localhost:3000``.  ``run_upstream.sh`` runs both
of them against this server; their test code is not part of this project.
"""

from __future__ import annotations

import argparse
from typing import Any

from cowrite import runtime
from cowrite.config import ServerSettings
from cowrite.server import EngineServer, HttpServer, SocketServer
from cowrite.server.http import wait_for_signal

SUITE = {
    "ping_interval": 0.3,
    "ping_timeout": 0.2,
    "max_payload": 1_000_000,
    "cors_origins": ("*",),
}


def build(host: str, port: int) -> HttpServer:
    http = HttpServer(host=host, port=port)

    # engine.io-protocol: every message is sent back.
    def echo(sid: str, data: str | bytes) -> None:
        eio.send(sid, data)

    eio = EngineServer(ServerSettings(path="/engine.io/", **SUITE), server=http, on_message=echo)

    # socket.io-protocol: on connection emit "auth" with the handshake's auth;
    # on "/": "message" -> "message-back", "message-with-ack" -> ack with the
    # arguments; "/custom" only emits "auth".
    sio = SocketServer(
        ServerSettings(path="/socket.io/", connect_timeout=1.0, **SUITE), server=http
    )
    for namespace in ("/", "/custom"):

        def connect(sid: str, auth: Any, namespace: str = namespace) -> None:
            sio.emit("auth", auth if auth is not None else {}, to=sid, namespace=namespace)

        sio.on("connect", connect, namespace=namespace)

    def message(sid: str, *args: Any) -> None:
        sio.emit("message-back", *args, to=sid)

    def message_with_ack(sid: str, *args: Any) -> tuple[Any, ...]:
        return args

    sio.on("message", message)
    sio.on("message-with-ack", message_with_ack)
    return http


async def main(host: str, port: int) -> None:
    http = build(host, port)
    await http.start()
    print(f"listening on http://{host}:{http.port}", flush=True)
    try:
        await wait_for_signal()
    finally:
        await http.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop")
    args = parser.parse_args()
    runtime.run(main(args.host, args.port), use_uvloop=not args.no_uvloop)
