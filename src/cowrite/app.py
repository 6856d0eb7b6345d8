"""Wiring: builds the server an operator runs with ``cowrite serve``.

Until the collaboration domain lands (documents, operation log, presence), the
served application is a room relay: clients ``join`` and ``leave`` rooms and
``relay`` events to everyone else in a room.  It is what the benchmarks drive.
"""

from __future__ import annotations

from typing import Any

from cowrite.config import ServerSettings
from cowrite.server import SocketServer
from cowrite.server.connection import Connection, Request


def build_relay_server(settings: ServerSettings) -> SocketServer:
    sio = SocketServer(settings)

    def join(sid: str, room: Any) -> dict[str, Any]:
        if not isinstance(room, str) or not room:
            error = {"code": "invalid_payload", "message": "room must be a non-empty string"}
            return {"ok": False, "error": error}
        sio.enter_room(sid, room)
        return {"ok": True}

    def leave(sid: str, room: Any) -> dict[str, Any]:
        if isinstance(room, str):
            sio.leave_room(sid, room)
        return {"ok": True}

    def relay(sid: str, room: Any, *payload: Any) -> None:
        if isinstance(room, str) and sio.in_room(sid, room):
            sio.emit("relay", *payload, to=room, skip_sid=sid)

    sio.on("join", join)
    sio.on("leave", leave)
    sio.on("relay", relay)

    def healthz(conn: Connection, req: Request) -> None:
        conn.respond(200, b"ok")

    sio.add_route("/healthz", healthz)
    return sio
