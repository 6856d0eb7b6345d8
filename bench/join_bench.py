"""Join time of a long document, with and without a snapshot (issue 12).

Fills one document with ``--ops`` operations (default 100,000) straight
through the store, starts ``cowrite serve`` on it in a child process, and
times, from a client's side, ``CowriteClient.open()`` until it has the whole
document:

- ``replay``: no snapshot, the whole log in ``sync`` pages of 1,000 (the
  largest page the server gives; the SDK asks for it with ``page_size``);
- ``snapshot``: ``open(snapshot=True)`` after a snapshot was stored
  ``--tail`` operations before the head: the snapshot plus those operations;
- ``compacted``: the same after ``cowrite compact --keep-ops 0 --keep-days 0``
  (the log then holds only the operations after the snapshot).

Operations are JSON (``{"i": n, "t": "x", "u": "<user>"}``, ~35 bytes: a text
insert); the snapshot is ``--snapshot-bytes`` opaque bytes (a Yjs state of a
100,000-edit text is of that order).  Each variant runs ``--repeat`` times on
a fresh connection; the median and the spread are printed as Markdown.

    .venv/bin/python bench/join_bench.py                       # SQLite, 100,000 ops
    .venv/bin/python bench/join_bench.py --store postgres --repeat 5
    .venv/bin/python bench/join_bench.py --ops 2000 --repeat 1  # smoke, seconds

PostgreSQL is ``COWRITE_BENCH_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``), in a throw-away schema.
Bounded: each join has a 300 s limit, the server 30 s to start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

from cowrite.auth import AuthSettings, mint_token
from cowrite.backends.store import AppendRequest, OperationStore, Role
from cowrite.client import ClientSettings, CowriteClient
from cowrite.core.compaction import RetentionSettings, compact_documents

PG_DSN = os.environ.get("COWRITE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "join-bench-secret-" + "j" * 32
DOC = "long-doc"
BATCH = 1000
JOIN_LIMIT = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def store_url(kind: str, directory: Path, schema: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{directory}/join-bench.db"
    # asyncpg passes unknown DSN parameters on as server settings.
    return f"{PG_DSN}?search_path={schema}"


async def fill(url: str, ops: int) -> None:
    from cowrite.app import open_store

    store: OperationStore = open_store(url)
    await store.open()
    try:
        await store.create_document(DOC, "writer")
        await store.set_role(DOC, "reader", Role.VIEWER)
        for start in range(0, ops, BATCH):
            await store.append_batch(
                [
                    AppendRequest(
                        DOC,
                        "writer",
                        f"w{n}",
                        b"J" + orjson.dumps({"i": n, "t": "x", "u": "writer"}),
                    )
                    for n in range(start, min(ops, start + BATCH))
                ]
            )
    finally:
        await store.close()


async def snapshot_and_compact(url: str, seq: int, size: int, compact: bool) -> None:
    from cowrite.app import open_store

    store: OperationStore = open_store(url)
    await store.open()
    try:
        if not compact:
            # Stored through the codec's binary form: {"state": <bytes>}.
            data = os.urandom(size)
            payload = b"B" + (1).to_bytes(4, "big") + len(data).to_bytes(4, "big") + data
            payload += b'{"state":{"_placeholder":true,"num":0}}'
            await store.store_snapshot(DOC, seq, "writer", payload)
        else:
            await compact_documents(store, RetentionSettings(keep_ops=0, keep_days=0))
    finally:
        await store.close()


def start_server(url: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
    env.update(
        COWRITE_AUTH_SECRET=SECRET,
        COWRITE_CORS_ORIGINS="http://127.0.0.1",
        COWRITE_STORE=url,
        COWRITE_LOG_LEVEL="warning",
        COWRITE_MAX_PAYLOAD=str(4 << 20),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cowrite", "serve", "--port", str(port)],
        env=env,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cowrite serve exited with {proc.returncode}")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise SystemExit("cowrite serve did not listen within 30 s")


async def timed_join(port: int, snapshot: bool, expect_head: int) -> tuple[float, int]:
    """Seconds from ``open()`` to the whole document, and operations received."""
    received = 0

    def count(_op: object) -> None:
        nonlocal received
        received += 1

    token = mint_token(AuthSettings(secret=SECRET), user_id="reader")
    client = CowriteClient(
        f"http://127.0.0.1:{port}",
        token=token,
        settings=ClientSettings(page_size=1000, max_message_size=8 << 20),
    )
    await asyncio.wait_for(client.connect(), 10)
    try:
        started = time.perf_counter()
        session = await asyncio.wait_for(
            client.open(DOC, snapshot=snapshot, on_operation=count), JOIN_LIMIT
        )
        elapsed = time.perf_counter() - started
        if session.last_seq != expect_head:
            raise SystemExit(f"joined at {session.last_seq}, expected {expect_head}")
        return elapsed, received
    finally:
        await client.close()


async def run(args: argparse.Namespace) -> None:
    schema = f"cowrite_joinbench_{uuid.uuid4().hex[:12]}"
    admin = None
    if args.store == "postgres":
        admin = await asyncpg.connect(PG_DSN)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    with tempfile.TemporaryDirectory(prefix="join-bench-") as tmp:
        directory = Path(tmp)
        url = store_url(args.store, directory, schema)
        try:
            started = time.perf_counter()
            await fill(url, args.ops)
            print(
                f"filled {args.ops} ops in {time.perf_counter() - started:.1f} s", file=sys.stderr
            )
            results: dict[str, list[tuple[float, int]]] = {}
            for variant in ("replay", "snapshot", "compacted"):
                if variant == "snapshot":
                    await snapshot_and_compact(
                        url, args.ops - args.tail, args.snapshot_bytes, compact=False
                    )
                if variant == "compacted":
                    await snapshot_and_compact(url, 0, 0, compact=True)
                port = free_port()
                proc = start_server(url, port, directory)
                try:
                    await wait_listening(port, proc)
                    await timed_join(port, variant != "replay", args.ops)  # warm-up
                    results[variant] = [
                        await timed_join(port, variant != "replay", args.ops)
                        for _ in range(args.repeat)
                    ]
                finally:
                    proc.terminate()
                    proc.wait(15)
        finally:
            if admin is not None:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
                await admin.close()
    print(
        f"\n{args.ops:,} operations, store {args.store}, snapshot of "
        f"{args.snapshot_bytes:,} bytes at seq {args.ops - args.tail:,}; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {args.repeat} runs each after one warm-up\n"
    )
    print("| join | ops received | median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for variant, runs in results.items():
        times = [t for t, _ in runs]
        print(
            f"| {variant} | {runs[0][1]:,} | {statistics.median(times) * 1000:.0f} ms "
            f"| {min(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--tail", type=int, default=100, help="operations after the snapshot")
    parser.add_argument("--snapshot-bytes", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not 0 <= args.tail < args.ops or args.repeat < 1:
        parser.error("need 0 <= --tail < --ops and --repeat >= 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
