"""Latency of the server API (publish, history) against a real ``cowrite serve``.

Starts ``cowrite serve --dev`` (SQLite in a temporary directory, or ``--store``:
a PostgreSQL DSN gets a schema of its own, dropped at the end) on a free port,
then, one request at a time on one keep-alive connection (aiohttp), times
``--requests`` ``POST /api/publish`` calls, then as many ``POST /api/history``
calls (100 operations a page) and ``POST /api/head`` calls (one indexed read:
mostly the HTTP round trip), and, as the reference in the same run, as many
``edit-operation`` acknowledgements through a python-socketio client (the
path a browser's edit takes).  Each line also gives the server process's CPU
time per request (``/proc``), which the machine's other load disturbs less
than the latencies.  Bounded: at most ``--requests`` of each and
``--deadline`` seconds in all.

    .venv/bin/python bench/api_latency.py --requests 2000
    .venv/bin/python bench/api_latency.py --requests 2000 --store postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from proccpu import cpu_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(name: str, samples: list[float], cpu: float) -> str:
    ms = sorted(x * 1000 for x in samples)
    q = statistics.quantiles(ms, n=100)
    return (
        f"{name:<22} n={len(ms):5d}  mean {statistics.fmean(ms):6.2f} ms  "
        f"p50 {q[49]:6.2f}  p95 {q[94]:6.2f}  p99 {q[98]:6.2f}  max {ms[-1]:6.2f}  "
        f"server CPU {cpu / len(ms) * 1e6:4.0f} us/request"
    )


async def run(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.deadline
    data = Path(tempfile.mkdtemp(prefix="cowrite-api-bench-"))
    port = free_port()
    cmd = [sys.executable, "-m", "cowrite", "serve", "--dev", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--log-level", "warning"]
    schema = None
    if args.store and args.store.startswith(("postgres://", "postgresql://")):
        import uuid

        import asyncpg

        schema = f"cowrite_api_bench_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(args.store)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.close()
        sep = "&" if "?" in args.store else "?"
        cmd += ["--store", f"{args.store}{sep}search_path={schema}"]
    elif args.store:
        cmd += ["--store", args.store]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=10)
        ) as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            key = (data / "dev-api-key").read_text().strip()
            headers = {"X-API-Key": key, "Content-Type": "application/json"}
            doc = f"bench-{port}"

            async def call(method: str, body: dict[str, Any]) -> Any:
                async with http.post(f"{base}/api/{method}", json=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"{method}: {resp.status} {answer}")
                    return answer["result"]

            await call("grant", {"documentId": doc, "userId": "bench", "role": "owner"})
            for i in range(50):  # warm-up
                await call("publish", {"documentId": doc, "userId": "bot", "operation": ["w", i]})
            publish: list[float] = []
            cpu = [cpu_seconds(proc.pid)]
            for i in range(args.requests):
                if time.monotonic() > deadline:
                    break
                op = {"insert": "x" * 40, "at": i}
                t0 = time.perf_counter()
                await call(
                    "publish",
                    {"documentId": doc, "userId": "bot", "operation": op, "clientOpId": f"b{i}"},
                )
                publish.append(time.perf_counter() - t0)
            cpu.append(cpu_seconds(proc.pid))
            history: list[float] = []
            pages = max(1, 50 + len(publish) - 100)  # starting points with 100 ops after them
            for i in range(args.requests):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                page = await call("history", {"documentId": doc, "since": i % pages, "limit": 100})
                history.append(time.perf_counter() - t0)
                assert len(page["ops"]) == min(100, 50 + len(publish)), len(page["ops"])
            cpu.append(cpu_seconds(proc.pid))
            head: list[float] = []
            for _ in range(args.requests):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                await call("head", {"documentId": doc})
                head.append(time.perf_counter() - t0)
            cpu.append(cpu_seconds(proc.pid))
        edit, edit_cpu = await socket_edits(base, data, doc, args.requests, deadline, proc.pid)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
        if schema is not None:
            import asyncpg

            admin = await asyncpg.connect(args.store)
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    store = args.store.split("@")[-1] if args.store else "sqlite"
    print(f"store {store}, sequential requests, one connection each")
    spent = [b - a for a, b in itertools.pairwise(cpu)]
    print(summary("API publish", publish, spent[0]))
    print(summary("API history (100 ops)", history, spent[1]))
    print(summary("API head", head, spent[2]))
    print(summary("socket edit ack", edit, edit_cpu))


async def socket_edits(
    base: str, data: Path, doc: str, count: int, deadline: float, pid: int
) -> tuple[list[float], float]:
    from cowrite.auth import mint_token
    from cowrite.config import load_auth_settings

    auth = load_auth_settings(dev_mode=True, data_dir=str(data), environ={})
    token = mint_token(auth, user_id="bench", name="Bench")
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await sio.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    samples: list[float] = []
    try:
        ack = await sio.call("join-document", {"documentId": doc, "since": 10**9}, timeout=10)
        assert ack["ok"], ack
        before = cpu_seconds(pid)
        for i in range(count):
            if time.monotonic() > deadline:
                break
            op = {"insert": "x" * 40, "at": i}
            t0 = time.perf_counter()
            ack = await sio.call(
                "edit-operation",
                {"documentId": doc, "operation": op, "clientOpId": f"s{i}"},
                timeout=10,
            )
            samples.append(time.perf_counter() - t0)
            assert ack["ok"], ack
        spent = cpu_seconds(pid) - before
    finally:
        await sio.disconnect()
    return samples, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--store", default=None)
    parser.add_argument("--deadline", type=float, default=120.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
