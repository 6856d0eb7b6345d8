"""cowrite server with the benchmark's handlers (same semantics as node/pysio servers).

Usage: python cowrite_server.py [--port 3003] [--host 127.0.0.1] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

import gcstats

from cowrite.config import ServerSettings
from cowrite.server import SocketServer


async def main(host: str, port: int, loop_name: str, tune_gc: bool) -> None:
    settings = ServerSettings(
        host=host,
        port=port,
        ping_interval=25.0,
        ping_timeout=20.0,
        cors_origins=("*",),
    )
    sio = SocketServer(settings)

    @sio.on("join")
    def join(sid: str, room: str) -> str:
        sio.enter_room(sid, room)
        return "ok"

    @sio.on("msg")
    def msg(sid: str, room: str, payload: Any) -> None:
        sio.emit("msg", payload, to=room, skip_sid=sid)

    await sio.start()
    if tune_gc:
        # What `cowrite serve` does after start-up (cowrite.runtime.tune_gc).
        from cowrite import runtime

        runtime.tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gcstats.install()
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps({"gc": gcstats.take()}), flush=True)
    )
    try:
        from importlib.metadata import version

        ver = version("cowrite")
    except Exception:
        ver = "unknown"
    info = {
        "server": "cowrite",
        "pid": os.getpid(),
        "host": host,
        "port": getattr(sio, "port", port),
        "listening": True,
        "version": ver,
        "loop": loop_name,
        "tune_gc": tune_gc,
    }
    print(json.dumps(info), flush=True)
    await stop.wait()
    await sio.stop()


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3003)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--tune-gc", action="store_true", help="apply cowrite.runtime.tune_gc()")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a.host, a.port, a.loop, a.tune_gc))
    else:
        asyncio.run(main(a.host, a.port, a.loop, a.tune_gc))
    sys.exit(0)


if __name__ == "__main__":
    run()
