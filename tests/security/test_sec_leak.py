"""No leak: tens of thousands of connections that join documents and leave
(cleanly or not) leave nothing behind, and memory stays bounded.

``COWRITE_LEAK_CONNECTIONS`` sets how many: 50,000 by default under ``CI``,
20,000 otherwise (50,000 take 70-95 s on a loaded 2-core machine; the churn
stops starting connections after ``COWRITE_LEAK_SECONDS``, default 150, and
the test then fails as out of time).  The churn runs in a separate process
(``churn.py``) so the server keeps a core to itself.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sec_support import RawSio, Running, live_state, rss_kib, token, wait_state

CONNECTIONS = int(
    os.environ.get("COWRITE_LEAK_CONNECTIONS", "50000" if os.environ.get("CI") else "20000")
)
CONCURRENCY = 200
DOCUMENTS = 300
USERS = 500
EDIT_EVERY = 10
BUDGET = float(os.environ.get("COWRITE_LEAK_SECONDS", "150"))
MAX_RSS_GROWTH_MIB = 30
PING_INTERVAL = 5.0

pytestmark = pytest.mark.timeout(BUDGET + 60)


def docs_of(user: int) -> dict[str, str]:
    """Connection i is user i % USERS in document i % DOCUMENTS: the documents
    user ``user`` opens, granted through the token's ``docs`` claim."""
    step = math.gcd(USERS, DOCUMENTS)
    return {f"churn-{d}": "editor" for d in range(user % step, DOCUMENTS, step)}


async def run_churn(port: int, total: int) -> dict[str, object]:
    cfg = {
        "port": port,
        "tokens": [token(f"user{u}", docs=docs_of(u)) for u in range(USERS)],
        "docs": DOCUMENTS,
        "total": total,
        "concurrency": CONCURRENCY,
        "edit_every": EDIT_EVERY,
        "seconds": BUDGET,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("churn.py")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(json.dumps(cfg).encode() + b"\n"), BUDGET + 30
    )
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


async def drain_timers(app: Running) -> None:
    """Wait until the timer heap holds (about) one entry per live session."""
    engine = app.engine
    async with asyncio.timeout(2 * PING_INTERVAL + 5):
        while len(engine._timers) > len(engine.sessions) + 2:
            await asyncio.sleep(0.1)


async def test_connection_churn_leaves_nothing_behind(
    make_app: Callable[..., Awaitable[Running]],
) -> None:
    # The timer heap drops a closed session's entry lazily, when its deadline
    # (the next ping) comes: a short ping interval bounds how long the churned
    # sessions stay referenced from it (see drain_timers).
    app = await make_app(
        environ={"COWRITE_AUTH_DOCS_CLAIM": "1"},
        server={"ping_interval": PING_INTERVAL, "ping_timeout": PING_INTERVAL},
    )
    # A long-lived member in one of the churned documents: it sees every
    # user-joined/user-left and remote-edit, and must still work afterwards.
    watcher = await RawSio.open(app.port)
    reply = await watcher.connect({"token": token("watcher", docs={"churn-0": "editor"})})
    assert reply.startswith("0{"), reply
    assert (await watcher.call("join-document", {"documentId": "churn-0"}))["ok"]
    # Warm up (first-use allocations: code paths, caches, SQLite pages).
    await run_churn(app.port, 2 * CONCURRENCY)
    watcher.events.clear()
    await drain_timers(app)
    baseline = await wait_state(app, live_state(app))
    gc.collect()
    rss_before = rss_kib()

    started = time.monotonic()
    result = await run_churn(app.port, CONNECTIONS)
    elapsed = time.monotonic() - started
    counts = result["counts"]
    assert isinstance(counts, dict)

    await wait_state(app, baseline, timeout=20.0)
    await drain_timers(app)
    gc.collect()
    rss_after = rss_kib()
    growth_mib = (rss_after - rss_before) / 1024
    print(
        f"\nchurn: {counts} in {elapsed:.1f} s; RSS {rss_before / 1024:.1f} -> "
        f"{rss_after / 1024:.1f} MiB (+{growth_mib:.1f} MiB); state {baseline}"
    )
    assert counts.get("attempted") == CONNECTIONS, f"ran out of time: {result}"
    assert counts.get("joined") == CONNECTIONS, result
    assert counts.get("edits_ok") == (CONNECTIONS + EDIT_EVERY - 1) // EDIT_EVERY, result
    assert growth_mib < MAX_RSS_GROWTH_MIB, f"RSS grew by {growth_mib:.1f} MiB"
    # The long-lived member still edits, and saw the churn come and go.
    ack = await watcher.call(
        "edit-operation", {"documentId": "churn-0", "operation": "after", "clientOpId": "w"}
    )
    assert ack["ok"], ack
    while watcher.ws.messages:
        watcher._take(watcher.ws.messages.popleft())
    kinds = {event for event, _ in watcher.events}
    assert {"user-joined", "user-left"} <= kinds, kinds
