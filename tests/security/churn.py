"""Connection churn, run in its own process (the second core) by the leak test.

Reads one JSON object on stdin::

    {"port": ..., "tokens": [...], "docs": N, "total": N, "concurrency": N,
     "edit_every": N, "seconds": budget}

and opens ``total`` connections, at most ``concurrency`` at a time.  Each one:
WebSocket, Socket.IO CONNECT with a token, ``join-document`` (one of ``docs``
documents), every ``edit_every``-th an ``edit-operation``, then leaves in one
of three ways (WebSocket close frame, Engine.IO CLOSE packet, TCP reset).
Stops starting new ones after ``seconds``.  Prints one JSON line: counts.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from typing import Any

from sec_support import RawSio


async def one(i: int, cfg: dict[str, Any], counts: collections.Counter[str]) -> None:
    tokens = cfg["tokens"]
    sio = await RawSio.open(cfg["port"], timeout=10.0)
    try:
        reply = await sio.connect({"token": tokens[i % len(tokens)]}, timeout=10.0)
        if not reply.startswith("0{"):
            counts["connect_refused"] += 1
            return
        doc = f"churn-{i % cfg['docs']}"
        ack = await sio.call("join-document", {"documentId": doc}, timeout=10.0)
        if not ack.get("ok"):
            counts[f"join_{ack['error']['code']}"] += 1
            return
        if i % cfg["edit_every"] == 0:
            ack = await sio.call(
                "edit-operation",
                {"documentId": doc, "operation": {"i": i}, "clientOpId": f"c{i}"},
                timeout=10.0,
            )
            counts["edits_ok" if ack.get("ok") else "edits_failed"] += 1
        counts["joined"] += 1
    finally:
        way = i % 3
        if way == 0:
            sio.ws.close()
        elif way == 1:
            sio.ws.send("1")  # Engine.IO CLOSE, then the TCP connection ends
            sio.ws.close_tcp()
        else:
            sio.ws.abort()


async def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    counts: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    deadline = started + cfg["seconds"]
    next_i = 0
    total = cfg["total"]

    async def worker() -> None:
        nonlocal next_i
        while next_i < total and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            try:
                await one(i, cfg, counts)
            except Exception as exc:
                counts[f"error_{type(exc).__name__}"] += 1

    await asyncio.gather(*(worker() for _ in range(cfg["concurrency"])))
    counts["attempted"] = next_i
    out = {"counts": dict(counts), "seconds": round(time.monotonic() - started, 2)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
