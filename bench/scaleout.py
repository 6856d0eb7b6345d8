"""Scale-out benchmark: 1, 2 and 3 ``cowrite serve`` instances behind nginx
(``deploy/nginx.conf``, ip_hash), one PostgreSQL, one Redis, the same load.

Load: ``--rooms`` documents of ``--room-size`` WebSocket clients; client j of a
room comes from a source address that nginx hashes to instance j mod N, so with
N > 1 every room spans instances and each broadcast crosses Redis.  Every
client sends ``edit-operation`` at ``--rate`` per second (acknowledged after the
PostgreSQL commit); every other member receives it as ``remote-edit``.  The
operation carries its send time (CLOCK_MONOTONIC, shared by every process on
the machine), so latency = receive - send: edit -> commit -> Redis -> delivery.

Measured over ``--duration`` seconds after ``--warmup``: delivered messages per
second, latency percentiles, CPU per delivered message of the cowrite
instances, of nginx and of redis-server (``INFO cpu`` before and after).

    .venv/bin/python bench/scaleout.py                       # the table in docs/SCALING.md
    .venv/bin/python bench/scaleout.py --instances 1,3 --rates 5 --duration 5   # quicker

The clients are raw Engine.IO v4 / Socket.IO v5 over aiohttp WebSockets (no
client library on the hot path), in ``--procs`` generator processes.  Needs
nginx (/usr/sbin/nginx), PostgreSQL and Redis as the test suite does
(scripts/ensure-services.sh); reuses tests/scaleout's cluster harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proccpu import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scaleout"))
sys.path.insert(0, str(ROOT / "src"))

# -- one generator process ------------------------------------------------------------


async def _client(spec: dict[str, Any], cfg: dict[str, Any], out: dict[str, Any]) -> None:
    import aiohttp
    import orjson

    start, end = cfg["measure_from"], cfg["measure_to"]
    stop_at = cfg["stop_at"]
    lat = out["latencies"]
    connector = aiohttp.TCPConnector(local_addr=(spec["ip"], 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        ws = await http.ws_connect(
            f"{cfg['url'].replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket",
            autoping=True,
            max_msg_size=0,
        )
        first = await ws.receive_str(timeout=10)
        assert first.startswith("0{"), first
        await ws.send_str("40" + orjson.dumps({"token": spec["token"]}).decode())
        joined = False
        await ws.send_str(
            "421"
            + orjson.dumps(["join-document", {"documentId": spec["doc"], "since": 0}]).decode()
        )
        ready = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            nonlocal joined
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = msg.data
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith('42["remote-edit"'):
                    now = time.monotonic()
                    if start <= now < end:
                        body = orjson.loads(data[2:])[1]
                        lat.append(now - body["operation"]["t"])
                        out["delivered"] += 1
                elif data.startswith("43"):
                    ack_id, _, rest = data[2:].partition("[")
                    if ack_id == "1" and not joined:
                        joined = True
                        if not ready.done():
                            ready.set_result(None)
                    else:
                        ack = orjson.loads("[" + rest)[0]
                        if ack.get("ok"):
                            out["acked"] += 1
                        else:
                            out["refused"] += 1
                elif data.startswith("44"):
                    out["errors"].append(data[:200])

        task = asyncio.get_running_loop().create_task(reader())
        try:
            await asyncio.wait_for(ready, 20)
            out["joined"] += 1
            # Start together, each client offset within its first period.
            period = 1.0 / cfg["rate"]
            next_at = cfg["t0"] + period * spec["phase"]
            i = 0
            while next_at < stop_at:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                i += 1
                op = {"documentId": spec["doc"], "clientOpId": f"{spec['label']}-{i}"}
                op["operation"] = {"t": time.monotonic(), "pad": "x" * 60}
                await ws.send_str(f"42{i + 1}" + orjson.dumps(["edit-operation", op]).decode())
                out["sent"] += 1
                next_at += period
            await asyncio.sleep(cfg["drain_s"])
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await ws.close()


async def _worker_main(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "latencies": [],
        "delivered": 0,
        "sent": 0,
        "acked": 0,
        "refused": 0,
        "joined": 0,
        "errors": [],
    }
    cpu0 = time.process_time()
    results = await asyncio.gather(
        *(_client(spec, cfg, out) for spec in cfg["clients"]), return_exceptions=True
    )
    out["errors"].extend(repr(r) for r in results if isinstance(r, BaseException))
    out["cpu_s"] = time.process_time() - cpu0
    return out


def worker(argv_json: str) -> None:
    cfg = json.loads(argv_json)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_worker_main(cfg))
    result["latencies"] = [round(x, 6) for x in result["latencies"]]
    # A file, not stdout: the event loop may have left the pipe non-blocking.
    Path(cfg["result_file"]).write_text(json.dumps(result))


# -- the driver -------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    return out


async def redis_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run_config(n: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from scaleout_cluster import REDIS_URL, Cluster, addresses_by_instance, token

    workdir = Path(tempfile.mkdtemp(prefix=f"scaleout-bench-{n}-"))
    cluster = Cluster(workdir, size=n)
    await cluster.start()
    rclient = aioredis.from_url(REDIS_URL)
    try:
        nets = await addresses_by_instance(cluster)
        order = [i.instance_id for i in cluster.instances]
        specs = []
        placed = dict.fromkeys(order, 0)  # clients per instance so far: one address each
        for r in range(args.rooms):
            doc = f"bench-room-{r}"
            for j in range(args.room_size):
                inst = order[j % n]
                k, placed[inst] = placed[inst], placed[inst] + 1
                net = nets[inst][k % len(nets[inst])]
                host = 1 + k // len(nets[inst])
                label = f"u{r}-{j}"
                specs.append(
                    {
                        "label": label,
                        "doc": doc,
                        "ip": f"{net}.{host}",
                        "token": token(label, doc),
                        "phase": ((r * args.room_size + j) * 0.618) % 1.0,
                    }
                )
        t0 = time.monotonic() + args.setup
        cfg_base = {
            "url": cluster.url,
            "rate": rate,
            "t0": t0,
            "measure_from": t0 + args.warmup,
            "measure_to": t0 + args.warmup + args.duration,
            "stop_at": t0 + args.warmup + args.duration,
            "drain_s": 1.0,
        }
        procs = []
        for k in range(args.procs):
            cfg = {
                **cfg_base,
                "clients": specs[k :: args.procs],
                "result_file": str(workdir / f"generator-{k}.json"),
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", json.dumps(cfg),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(proc)
        nginx_pid = cluster.nginx.proc.pid  # type: ignore[union-attr]
        pids = {i.instance_id: i.proc.pid for i in cluster.instances}  # type: ignore[union-attr]
        await asyncio.sleep(max(0.0, cfg_base["measure_from"] - time.monotonic()))
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        ngx0 = sum(cpu_seconds(p) for p in [nginx_pid, *children(nginx_pid)])
        red0 = await redis_cpu(rclient)
        await asyncio.sleep(max(0.0, cfg_base["measure_to"] - time.monotonic()))
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        ngx1 = sum(cpu_seconds(p) for p in [nginx_pid, *children(nginx_pid)])
        red1 = await redis_cpu(rclient)
        results = []
        for k, p in enumerate(procs):
            _, stderr = await asyncio.wait_for(p.communicate(), args.setup + 60)
            if p.returncode != 0:
                raise RuntimeError(f"generator failed: {stderr.decode()[-2000:]}")
            results.append(json.loads((workdir / f"generator-{k}.json").read_text()))
    finally:
        await rclient.aclose()
        await cluster.stop()
    lat = [x for r in results for x in r["latencies"]]
    delivered = sum(r["delivered"] for r in results)
    server_cpu = sum(cpu1[k] - cpu0[k] for k in cpu0)
    return {
        "instances": n,
        "rate_per_client": rate,
        "clients": len(specs),
        "offered_ops_s": len(specs) * rate,
        "delivered_s": delivered / args.duration,
        "p50_ms": pct(lat, 50) * 1000,
        "p95_ms": pct(lat, 95) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "server_cpu_pct": 100 * server_cpu / args.duration,
        "server_us_per_msg": 1e6 * server_cpu / max(delivered, 1),
        "per_instance_cpu_pct": {
            k: round(100 * (cpu1[k] - cpu0[k]) / args.duration, 1) for k in cpu0
        },
        "nginx_us_per_msg": 1e6 * (ngx1 - ngx0) / max(delivered, 1),
        "redis_cpu_pct": 100 * (red1 - red0) / args.duration,
        "redis_us_per_msg": 1e6 * (red1 - red0) / max(delivered, 1),
        "generator_cpu_s": sum(r["cpu_s"] for r in results),
        "joined": sum(r["joined"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "acked": sum(r["acked"] for r in results),
        "refused": sum(r["refused"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:10],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| instances | offered ops/s | delivered msg/s | P50 ms | P95 ms | P99 ms "
        "| cowrite CPU % (per instance) | cowrite µs/msg | nginx µs/msg | Redis CPU % "
        "| Redis µs/msg | refused |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        per = " / ".join(f"{v:.0f}" for v in r["per_instance_cpu_pct"].values())
        lines.append(
            f"| {r['instances']} | {r['offered_ops_s']:.0f} | {r['delivered_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['server_cpu_pct']:.0f} ({per}) | {r['server_us_per_msg']:.1f} "
            f"| {r['nginx_us_per_msg']:.1f} | {r['redis_cpu_pct']:.1f} "
            f"| {r['redis_us_per_msg']:.2f} | {r['refused']} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    from scaleout_cluster import require_services

    await require_services()
    rows = []
    for rate in [float(x) for x in args.rates.split(",")]:
        for n in [int(x) for x in args.instances.split(",")]:
            row = await run_config(n, rate, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    command = "bench/scaleout.py " + " ".join(sys.argv[1:])
    print(f"\n{command}\n{args.rooms} rooms x {args.room_size} WebSocket clients, "
          f"{args.duration:g} s measured after {args.warmup:g} s\n")  # fmt: skip
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", default="1,2,3")
    p.add_argument("--rates", default="5,20", help="edits per second per client (one run each)")
    p.add_argument("--rooms", type=int, default=30)
    p.add_argument("--room-size", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--setup", type=float, default=4.0, help="seconds to connect and join")
    p.add_argument("--procs", type=int, default=2, help="generator processes")
    p.add_argument("--json", default=None, help="also write the rows here")
    return p.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        asyncio.run(main(parse()))
