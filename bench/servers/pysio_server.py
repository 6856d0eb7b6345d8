"""python-socketio 5.x AsyncServer on aiohttp, same handlers as the other servers.

Usage: python pysio_server.py [--port 3002] [--host 127.0.0.1] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from importlib.metadata import version
from typing import Any

import gcstats
import socketio
from aiohttp import web


async def main(host: str, port: int, loop_name: str) -> None:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins="*",
        ping_interval=25,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )

    @sio.on("join")
    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    @sio.on("msg")
    async def msg(sid: str, room: str, payload: Any) -> None:
        await sio.emit("msg", payload, to=room, skip_sid=sid)

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gcstats.install()
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps({"gc": gcstats.take()}), flush=True)
    )
    info = {
        "server": "pysio",
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "listening": True,
        "version": version("python-socketio"),
        "aiohttp": version("aiohttp"),
        "loop": loop_name,
    }
    print(json.dumps(info), flush=True)
    await stop.wait()
    await runner.cleanup()


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3002)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a.host, a.port, a.loop))
    else:
        asyncio.run(main(a.host, a.port, a.loop))
    sys.exit(0)


if __name__ == "__main__":
    run()
