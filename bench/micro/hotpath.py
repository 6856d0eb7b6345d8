"""Python CPU of the broadcast hot path, without sockets.

Feeds one masked WebSocket frame ``42["msg","room",{...}]`` into a
connection of a room of ``--room`` members and flushes the writes into fake
transports; prints microseconds per incoming message and per delivered copy.

    .venv/bin/python bench/micro/hotpath.py --room 5 --n 100000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from websockets.frames import Frame, Opcode

from cowrite.config import ServerSettings
from cowrite.server import SocketServer
from cowrite.server.connection import Connection


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.written += len(c)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def handshake_request() -> bytes:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    return (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def handshake(sio: SocketServer, conn: Connection) -> None:
    conn.data_received(handshake_request())
    conn.data_received(Frame(Opcode.TEXT, b"40").serialize(mask=True))
    conn.data_received(Frame(Opcode.TEXT, b'42["join","room"]').serialize(mask=True))


async def main(room: int, n: int) -> None:
    sio = SocketServer(ServerSettings(port=0))

    @sio.on("join")
    def join(sid: str, name: str) -> None:
        sio.enter_room(sid, name)

    @sio.on("msg")
    def msg(sid: str, name: str, payload: Any) -> None:
        sio.emit("msg", payload, to=name, skip_sid=sid)

    await sio.start()
    conns = []
    for _ in range(room):
        conn = Connection(sio.engine, 1 << 20, 1 << 20)
        conn.connection_made(FakeTransport())
        handshake(sio, conn)
        conns.append(conn)
    sio.engine._flush_now()
    payload = b'42["msg","room",{"t":1234567890123.456,"pad":"' + b"x" * 70 + b'"}]'
    frame = Frame(Opcode.TEXT, payload).serialize(mask=True)
    sender = conns[0]
    t0 = time.process_time()
    for _ in range(n):
        sender.data_received(frame)
        await asyncio.sleep(0)  # one loop iteration: the scheduled flush runs
    dt = time.process_time() - t0
    per_in = dt / n * 1e6
    print(
        f"room={room}: {per_in:.2f} us per incoming message, {per_in / (room - 1):.2f} us per delivered copy"
    )
    await sio.stop(timeout=0.1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--room", type=int, default=5)
    p.add_argument("--n", type=int, default=100_000)
    a = p.parse_args()
    import uvloop

    uvloop.run(main(a.room, a.n))
