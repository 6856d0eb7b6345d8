"""Python CPU of the collaboration hot path, without sockets.

The real application (``build_app``: JWT auth, CollabService, group commit into
a real store, metrics) with fake transports: ``--rooms`` documents of
``--room`` members each connect with a token and join; then every loop turn
``--per-turn`` members send ``edit-operation`` (~100-byte operation, with a
clientOpId and an ack id), and the turn waits until their acks went out.
Prints CPU (all threads: the store's too) per edit and per delivered
``remote-edit``, and the number of store transactions.

    .venv/bin/python bench/micro/collabpath.py --edits 20000 --per-turn 4
    .venv/bin/python bench/micro/collabpath.py --store postgresql://127.0.0.1/test --edits 5000
    .venv/bin/python bench/micro/collabpath.py --profile /tmp/collab.prof   # cProfile the edit phase
    .venv/bin/python bench/micro/collabpath.py --recovery   # offsets on every remote-edit
    # instructions per join: the difference of two runs (300 and 100 rooms of 5)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/micro/collabpath.py \\
        --rooms 300 --room 5 --join-in-flight 100 --exit-after-joins
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import tempfile
import time
from typing import Any

import orjson
from hotpath import FakeTransport, handshake_request
from websockets.frames import Frame, Opcode

from cowrite.app import build_app
from cowrite.auth import mint_token
from cowrite.config import load_app_settings
from cowrite.server.connection import Connection


def frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True)


class Counting(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.acks = 0
        # --join-in-flight: done at the next CONNECT answer or ack.
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        # One server frame per chunk (unmasked): count Socket.IO ACK packets.
        data = bytes(data)
        self.written += len(data)
        n = data[1] & 0x7F
        offset = 2 if n < 126 else 4 if n == 126 else 10
        if data[offset : offset + 2] == b"43":
            self.acks += 1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
        elif (
            data[offset : offset + 2] == b"40"
            and self.waiter is not None
            and not self.waiter.done()
        ):
            self.waiter.set_result(None)

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.write(c)


async def join_trickled(
    engine: Any,
    tokens: dict[tuple[int, int], str],
    members: list[tuple[Connection, Counting, str]],
    args: argparse.Namespace,
) -> None:
    """Clients in order (a room's members one after another), at most
    ``--join-in-flight`` at once, each: handshake, CONNECT with its token,
    wait for the answer, join, wait for the ack (the generator's shape)."""
    gate = asyncio.Semaphore(args.join_in_flight)
    loop = asyncio.get_running_loop()

    async def one(r: int, m: int) -> None:
        async with gate:
            doc = f"doc-{os.getpid()}-{r}"
            transport = Counting()
            conn = Connection(engine, 1 << 20, 1 << 20)
            transport.waiter = loop.create_future()
            conn.connection_made(transport)
            conn.data_received(handshake_request())
            conn.data_received(frame("40" + orjson.dumps({"token": tokens[(r, m)]}).decode()))
            await transport.waiter
            transport.waiter = loop.create_future()
            conn.data_received(frame(f'421["join-document",{orjson.dumps(doc).decode()}]'))
            await transport.waiter
            transport.waiter = None
            members.append((conn, transport, doc))

    await asyncio.gather(*(one(r, m) for r in range(args.rooms) for m in range(args.room)))


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="collabpath-")
    env = {
        "COWRITE_AUTH_SECRET": "collabpath-secret-0123456789abcdef0123456789",
        "COWRITE_CORS_ORIGINS": "*",
        "COWRITE_COMMIT_INTERVAL": str(args.commit_interval),
        "COWRITE_AUTH_DOCS_CLAIM": "1",
        "COWRITE_RECOVERY": "1" if args.recovery else "0",
    }
    if args.redis:
        env["COWRITE_REDIS_URL"] = args.redis
        env["COWRITE_REDIS_PREFIX"] = f"collabpath-{os.getpid()}:"
    store = args.store or f"sqlite:///{tmp}/cowrite.db"
    settings = load_app_settings(
        environ=env, store=store, data_dir=tmp, server_overrides={"port": 0}
    )
    app = build_app(settings)
    await app.start()
    engine = app.server.engine
    members: list[tuple[Connection, Counting, str]] = []
    tokens = {
        (r, m): mint_token(
            settings.auth,
            user_id=f"u{r}-{m}",
            name=f"u{r}-{m}",
            docs={f"doc-{os.getpid()}-{r}": "editor"},
        )
        for r in range(args.rooms)
        for m in range(args.room)
    }
    join_profiler = cProfile.Profile(time.process_time) if args.profile_join else None
    if join_profiler:
        join_profiler.enable()
    j0 = time.process_time()
    if args.join_in_flight:
        await join_trickled(engine, tokens, members, args)
    for r in range(args.rooms if not args.join_in_flight else 0):
        doc = f"doc-{os.getpid()}-{r}"
        for m in range(args.room):
            token = tokens[(r, m)]
            transport = Counting()
            conn = Connection(engine, 1 << 20, 1 << 20)
            conn.connection_made(transport)
            conn.data_received(handshake_request())
            conn.data_received(frame("40" + orjson.dumps({"token": token}).decode()))
            members.append((conn, transport, doc))
    for _ in range(50 if not args.join_in_flight else 0):
        await asyncio.sleep(0.01)
    for conn, _, doc in members if not args.join_in_flight else ():
        conn.data_received(frame(f'421["join-document",{orjson.dumps(doc).decode()}]'))
    for _ in range(6000):
        await asyncio.sleep(0.01)
        if sum(t.acks for _, t, _ in members) >= len(members):
            break
    assert sum(t.acks for _, t, _ in members) >= len(members), "joins not acknowledged"
    join_cpu = time.process_time() - j0
    if join_profiler:
        join_profiler.disable()
        join_profiler.dump_stats(args.profile_join)
    shape = (
        f"{args.join_in_flight} in flight"
        if args.join_in_flight
        else "all connect, then all join; includes 2.5 s of idle loop waiting"
    )
    print(
        f"{len(members)} connect + auth + join: {join_cpu / len(members) * 1e6:.0f} us CPU each "
        f"({shape})"
    )
    if args.exit_after_joins:
        # For instruction counts (callgrind): the difference between two
        # runs with different --rooms is the joins' cost alone.
        os._exit(0)
    pad = "x" * 60
    # Every edit has its own clientOpId (a resend would be a duplicate: no broadcast).
    frames = [
        frame(
            f'42{k + 2}["edit-operation",{{"documentId":{orjson.dumps(members[k % len(members)][2]).decode()},'
            f'"operation":{{"t":1234567890.123,"insert":"{pad}"}},"clientOpId":"c{k}"}}]'
        )
        for k in range(args.edits + args.per_turn)
    ]
    acks_before = sum(t.acks for _, t, _ in members)
    commits_before = app.service.committer.batches
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    n = 0
    t0 = time.process_time()
    w0 = time.perf_counter()
    if profiler:
        profiler.enable()
    i = 0
    while n < args.edits:
        for _ in range(args.per_turn):
            conn, _, _ = members[i % len(members)]
            conn.data_received(frames[i])
            i += 1
            n += 1
        await asyncio.sleep(args.turn_sleep)
    while sum(t.acks for _, t, _ in members) - acks_before < n:
        await asyncio.sleep(0.001)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    delivered = n * (args.room - 1)
    commits = app.service.committer.batches - commits_before
    print(
        f"{n} edits in {wall:.2f}s wall: {cpu / n * 1e6:.1f} us CPU per edit, "
        f"{cpu / delivered * 1e6:.2f} us per delivered remote-edit, {commits} commits "
        f"({n / max(commits, 1):.1f} edits each)"
    )
    known = getattr(app.store, "known_appends", None)
    if known is not None:
        print(f"postgres: {known} appends with known heads, {app.store.known_misses} misses")
    received = app.service.ops_received
    assert received >= n, f"only {received} of {n} edits were accepted"
    assert app.service.ops_delivered >= delivered, "not every remote-edit was delivered"
    await app.stop(grace=0.5)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--room", type=int, default=5)
    p.add_argument("--edits", type=int, default=20000)
    p.add_argument("--per-turn", type=int, default=2)
    p.add_argument("--turn-sleep", type=float, default=0.001, help="seconds between turns")
    p.add_argument("--store", default="")
    p.add_argument("--redis", default="", help="redis://...: broker and presence through Redis")
    p.add_argument("--commit-interval", type=float, default=0.002)
    p.add_argument("--recovery", action="store_true", help="connection-state recovery on")
    p.add_argument("--profile", default="")
    p.add_argument(
        "--join-in-flight",
        type=int,
        default=0,
        help="connect and join client by client, this many at once (0: all connect, then all join)",
    )
    p.add_argument("--profile-join", default="", help="cProfile (CPU time) the connect+join phase")
    p.add_argument(
        "--exit-after-joins", action="store_true", help="stop at once after the joins (callgrind)"
    )
    a = p.parse_args()
    import uvloop

    uvloop.run(main(a))
