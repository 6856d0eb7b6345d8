"""CPU per received ``remote-edit``: python-socketio's ``AsyncClient`` against
cowrite's own client (its transport on cowrite's sans-I/O codecs).

Starts ``cowrite serve`` and a sender in subprocesses, so this process only
receives.  A receiver joins a document; the sender submits ``N`` edits (200 in
flight); the receiver measures ``time.process_time()`` between the first and
the last ``remote-edit``::

    .venv/bin/python tests/client/bench_receive.py [N] [sio|cowrite|raw ...]

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

SECRET = "bench-secret-" + "y" * 32
ENV = {**os.environ, "COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "http://localhost"}
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(user: str) -> str:
    from cowrite.auth import AuthSettings, mint_token

    return mint_token(AuthSettings(secret=SECRET), user_id=user, ttl=3600)


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def send(url: str, doc: str, n: int) -> None:
    """The sender (run in its own process): owner of ``doc``, ``n`` edits over
    connections of 200 edits each (the server's per-connection edit burst)."""
    import socketio  # type: ignore[import-untyped]

    async def joined() -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(url, auth={"token": token("sender")}, transports=["websocket"])
        ack = await sio.call("join-document", {"documentId": doc, "since": 0}, timeout=30)
        assert ack["ok"], ack
        return sio

    async def one(sio: socketio.AsyncClient, i: int) -> None:
        payload = {
            "documentId": doc,
            "operation": {"i": i, "text": "x" * 40},
            "clientOpId": f"b{i}",
        }
        r = await sio.call("edit-operation", payload, timeout=60)
        assert r["ok"], r

    logging.getLogger("engineio.client").setLevel(logging.CRITICAL)
    firsts = range(0, n, 200)
    clients = await asyncio.gather(*(joined() for _ in firsts))
    await asyncio.gather(
        *(
            one(sio, i)
            for sio, first in zip(clients, firsts, strict=True)
            for i in range(first, min(n, first + 200))
        ),
        return_exceptions=True,  # the receiver's count is what is measured
    )
    await asyncio.gather(*(sio.disconnect() for sio in clients))


async def share(url: str, doc: str) -> None:
    import socketio

    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"token": token("sender")}, transports=["websocket"])
    for call in (
        ("join-document", {"documentId": doc, "since": 0}),
        ("share-document", {"documentId": doc, "userId": "reader", "role": "viewer"}),
    ):
        ack = await sio.call(*call, timeout=10)
        assert ack["ok"], ack
    await sio.disconnect()


class Meter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.t0 = self.c0 = 0.0
        self.done = asyncio.Event()

    def hit(self) -> None:
        if self.count == 0:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.count += 1
        if self.count == self.n:
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            self.done.set()


async def recv_sio(url: str, doc: str, meter: Meter) -> Any:
    import socketio

    sio = socketio.AsyncClient(reconnection=False)

    async def on_edit(data: Any) -> None:
        meter.hit()

    sio.on("remote-edit", on_edit)
    await sio.connect(url, auth={"token": token("reader")}, transports=["websocket"])
    ack = await sio.call("join-document", {"documentId": doc, "since": 0}, timeout=10)
    assert ack["ok"], ack
    return sio.disconnect


async def recv_cowrite(url: str, doc: str, meter: Meter) -> Any:
    from cowrite.client import ClientSettings, CowriteClient

    client = CowriteClient(url, token=token("reader"), settings=ClientSettings())
    await client.connect()
    session = await client.open(doc)
    session.on_operation(lambda op: meter.hit())
    return client.close


async def recv_raw(url: str, doc: str, meter: Meter) -> Any:
    """The receive path alone: websockets + cowrite.protocol codecs, no SDK."""
    import orjson
    from websockets.asyncio.client import connect

    from cowrite.protocol.socketio import Decoder, SioType

    ws = await connect(url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    await ws.recv()
    await ws.send("40" + orjson.dumps({"token": token("reader")}).decode())
    assert str(await ws.recv()).startswith("40")
    await ws.send("421" + orjson.dumps(["join-document", {"documentId": doc}]).decode())
    dec = Decoder()

    async def loop() -> None:
        async for msg in ws:
            if msg == "2":
                await ws.send("3")
                continue
            if isinstance(msg, str) and msg[0] == "4":
                pkt = dec.feed(msg[1:])
                if pkt is not None and pkt.type is SioType.EVENT and pkt.data[0] == "remote-edit":
                    meter.hit()

    task = asyncio.get_running_loop().create_task(loop())

    async def close() -> None:
        task.cancel()
        await ws.close()

    return close


async def main(n: int, kinds: list[str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                f"{BIN}/cowrite",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                tmp,
                "--log-level",
                "warning",
            ],
            env=ENV,
        )
        try:
            await wait_port(port)
            for kind in kinds:
                doc = f"bench-{kind}-{time.monotonic_ns()}"
                await share(url, doc)
                meter = Meter(n)
                receiver = {"sio": recv_sio, "cowrite": recv_cowrite, "raw": recv_raw}[kind]
                close = await receiver(url, doc, meter)
                sender = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--send", url, doc, str(n), env=ENV
                )
                await asyncio.wait_for(meter.done.wait(), 120)
                await sender.wait()
                await close()
                cpu = (meter.c1 - meter.c0) / (n - 1) * 1e6
                wall = meter.t1 - meter.t0
                print(f"{kind:8s} {n} remote-edits: {cpu:6.1f} us CPU/message, {wall:.2f} s wall")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--send"]:
        asyncio.run(send(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
        asyncio.run(main(count, sys.argv[2:] or ["sio", "raw"]))
