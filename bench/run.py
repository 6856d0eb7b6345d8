"""Side-by-side benchmark: Node socket.io vs python-socketio vs cowrite.

--scenario broadcast (default): each server runs the same room-broadcast
handlers (see bench/servers/), pinned to one core; a Node.js raw
Engine.IO/Socket.IO load generator (bench/loadgen/) runs pinned to another
core. Measures, per server:

  a. memory per idle connected client and connect rate (--conns clients);
  b. server CPU per delivered message and send->receive latency at stepped
     delivered-message rates, until the server saturates, then P95 at half
     of the saturation rate.

--scenario collab (issue 9): the collaboration path (JWT in the handshake,
join-document acknowledged, edit-operation with clientOpId and an ack,
remote-edit to the other room members) on ADR-003's Node reference (with and
without PostgreSQL) and on `cowrite serve` (SQLite, PostgreSQL); server and
database CPU per delivered remote-edit, edit->remote-edit and ack latency per
step, connect+auth+join rate, memory per joined connection. See collab.py.

Writes bench/results/<stamp>.json and prints a Markdown report. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import collab
from proccpu import CLK_TCK, cpu_seconds
from reportlines import closing_lines, failure_lines

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ALL_SERVERS = ("node", "pysio", "cowrite")
SCENARIO_SERVERS = {"broadcast": ALL_SERVERS, "collab": collab.COLLAB_SERVERS}
DEFAULT_RATES = "1000,2000,4000,8000,16000,32000,64000,128000"


# --------------------------------------------------------------------------- /proc


def mem_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def core_busy(core: int) -> float | None:
    """Busy seconds of one CPU core (all processes), from /proc/stat; None if unknown."""
    if core < 0:
        return None
    with contextlib.suppress(OSError), open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal ...
                return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK
    return None


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------- processes


class LineProc:
    """A subprocess whose stdout lines are collected by a thread."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.cmd = cmd
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=BENCH,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def readline(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout:.0f}s") from None
        if line is None:
            self.lines.put(None)
            raise RuntimeError(f"{self.name} exited (rc={self.proc.poll()}), see {self.log.name}")
        return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
        self.log.close()
        return self.proc.returncode


class Server(LineProc):
    launch: collab.Launch | None = None

    def wait_listening(self, timeout: float = 30.0, ready: str = "json") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no 'listening' line within {timeout}s")
            line = self.readline(left)
            if ready == "cowrite" and line.startswith("cowrite listening on http://"):
                # `cowrite serve` prints a banner once listening; it is ready
                # (store open, migrations applied) when /readyz answers 200.
                hostport = line.split("http://", 1)[1].split()[0]
                self.info = {"server": self.name, "pid": self.proc.pid, "listening": True}
                self.info["banner"] = line.strip()
                self.info["ready_after_s"] = self._poll_ready(hostport, deadline)
                return self.info
            with contextlib.suppress(ValueError):
                info = json.loads(line)
                if isinstance(info, dict) and info.get("listening"):
                    self.info = info
                    return info

    def _poll_ready(self, hostport: str, deadline: float) -> float:
        import http.client

        host, _, port = hostport.rpartition(":")
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up, see {self.log.name}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                c = http.client.HTTPConnection(host, int(port), timeout=2)
                try:
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        return time.monotonic() - t0
                finally:
                    c.close()
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: /readyz not 200 in time")

    def pg_stats(self) -> dict[str, Any] | None:
        """The ADR reference's INSERT counters (it answers SIGUSR1 with a {"pg": ...} line)."""
        return self._signal_report("pg") if self.name == "nodeadr-pg" else None

    def _signal_report(self, key: str) -> dict[str, Any] | None:
        """Send SIGUSR1 and read the server's stdout for a ``{key: {...}}`` JSON line."""
        if not self.alive():
            return None
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                line = self.readline(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and key in obj:
                    return dict(obj[key])
        return None

    def stop(self, grace: float = 5.0) -> int | None:
        rc = super().stop(grace)
        if self.launch is not None:
            self.launch.cleanup()  # drop the benchmark database / remove the SQLite file
        return rc

    def db_cpu(self) -> dict[int, tuple[str, float]] | None:
        """A sample of the PostgreSQL processes serving this server's database."""
        if self.launch is None or (self.launch.dbname is None and self.launch.redis_url is None):
            return None
        out = collab.pg_cpu(self.launch.dbname) if self.launch.dbname else {}
        if self.launch.redis_url:
            out.update(collab.redis_cpu(self.launch.redis_url))
        return out

    def gc_stats(self) -> dict[str, Any] | None:
        """GC pauses since the last call (Python servers only: they answer SIGUSR1)."""
        return self._signal_report("gc") if self.name in ("pysio", "cowrite") else None


class Generator(LineProc):
    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        super().__init__("loadgen", cmd, log_path, env)
        self._id = 0
        ready = self._next_json(30.0)
        if ready.get("event") != "ready":
            raise RuntimeError(f"loadgen: unexpected first line {ready}")
        self.pids = [ready["pid"], *ready["workerPids"]]

    def _next_json(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loadgen: no reply within {timeout:.0f}s")
            line = self.readline(left)
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    if obj.get("event") in ("worker_exit", "max_lifetime"):
                        raise RuntimeError(f"loadgen: {obj}")
                    return obj

    def call(self, cmd: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        self._id += 1
        msg = {"id": self._id, "cmd": cmd, **kw}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        while True:
            reply = self._next_json(timeout)
            if reply.get("id") == self._id:
                if not reply.get("ok"):
                    raise RuntimeError(f"loadgen {cmd} failed: {reply.get('error')}")
                return reply

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total


# --------------------------------------------------------------------------- benchmark


@dataclass
class Ctx:
    args: argparse.Namespace
    env: dict[str, str]
    log_dir: Path
    deadline: float
    notes: list[str] = field(default_factory=list)
    stamp: str = ""

    @property
    def collab(self) -> bool:
        return bool(self.args.scenario == "collab")

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


def server_cmd(ctx: Ctx, name: str, port: int) -> list[str]:
    a = ctx.args
    pin = ["taskset", "-c", str(a.server_core)] if a.server_core >= 0 else []
    py = a.python
    if name == "node":
        return [*pin, a.node, "servers/node_server.js", str(port), "127.0.0.1"]
    if name == "pysio":
        return [*pin, py, "servers/pysio_server.py", "--port", str(port), "--loop", a.py_loop]
    if name == "cowrite":
        cmd = [*pin, py, "servers/cowrite_server.py", "--port", str(port), "--loop", a.py_loop]
        return cmd + (["--tune-gc"] if a.cowrite_tune_gc == "on" else [])
    raise ValueError(name)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_server(
    ctx: Ctx, name: str, port: int, phase: str, clients: tuple[str, int] | None = None
) -> Server:
    """A fresh server. collab: with a fresh database (or SQLite file) that grants
    the warm-up clients and ``clients`` (prefix, count); dropped by ``stop``."""
    if not port_free(port):
        raise RuntimeError(f"port {port} is already in use (a leftover server?); try --base-port")
    log = ctx.log_dir / f"{name}-{phase}.stderr.log"
    if not ctx.collab:
        srv = Server(name, server_cmd(ctx, name, port), log, ctx.env)
        ready = "json"
    else:
        a = ctx.args
        pin = ["taskset", "-c", str(a.server_core)] if a.server_core >= 0 else []
        groups = [("warm-", a.room_size * 4)] + ([clients] if clients else [])
        launch = collab.prepare(name, a, port, pin, groups, ctx.stamp, ctx.log_dir)
        try:
            srv = Server(name, launch.cmd, log, {**ctx.env, **launch.env})
        except Exception:
            launch.cleanup()
            raise
        srv.launch = launch
        ready = launch.ready
    try:
        srv.wait_listening(60.0, ready)
        if srv.launch is not None:
            srv.info.update(srv.launch.info)
    except Exception:
        srv.stop()
        raise
    # taskset execs the server, so the PID is the server's own.
    srv.pid = srv.proc.pid
    return srv


def start_generator(ctx: Ctx, workers: int, phase: str, name: str) -> Generator:
    a = ctx.args
    pin = ["taskset", "-c", str(a.gen_core)] if a.gen_core >= 0 else []
    lifetime = max(60, int(ctx.time_left()) + 60)
    cmd = [*pin, a.node, "loadgen/main.js", "--workers", str(workers)]
    cmd += ["--max-lifetime", str(lifetime)]
    gen = Generator(cmd, ctx.log_dir / f"{name}-{phase}.loadgen.log", ctx.env)
    if ctx.collab:
        gen.call(
            "config",
            padLen=max(0, a.payload_bytes - len(collab.OP_TEMPLATE)),
            maxBuffered=256 * 1024,
            client=a.client,
            scenario="collab",
            secret=a.jwt_secret,
            docsClaim=a.cowrite_perms == "claim" and name.startswith("cowrite"),
            maxOutstanding=2000,
        )
        return gen
    payload_overhead = len('{"t":1234567.123,"pad":""}')
    gen.call(
        "config",
        padLen=max(0, a.payload_bytes - payload_overhead),
        maxBuffered=256 * 1024,
        client=a.client,
    )
    return gen


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"


def per_ip(ctx: Ctx, n: int) -> int:
    # Spread client source addresses over 127.0.0.2.. only when one address
    # could run out of ephemeral ports.
    return ctx.args.per_ip if n > ctx.args.per_ip else 0


def warm_up(ctx: Ctx, gen: Generator, port: int) -> None:
    """Open a few clients, exchange some messages, close: loads lazy code paths."""
    rs = ctx.args.room_size
    gen.call("connect", timeout=60, url=ws_url(port), count=rs * 4, roomSize=rs, roomPrefix="warm-")
    gen.call("start", rate=200)
    time.sleep(1.0)
    gen.call("stop")
    gen.call("close")
    time.sleep(1.0)
    gen.call("mark")


def memory_phase(ctx: Ctx, name: str, port: int) -> dict[str, Any]:
    a = ctx.args
    n = a.conns
    res: dict[str, Any] = {"conns": n}
    workers = max(1, math.ceil(n / a.clients_per_worker))
    prefix = "mem-" if ctx.collab else "room-"
    srv = start_server(ctx, name, port, "mem", (prefix, n))
    res["server_info"] = srv.info
    gen = None
    try:
        gen = start_generator(ctx, workers, "mem", name)
        warm_up(ctx, gen, port)
        time.sleep(a.settle)
        before = mem_kib(srv.pid)
        cpu0 = cpu_seconds(srv.pid)
        db0 = srv.db_cpu()
        t0 = time.monotonic()
        r = gen.call(
            "connect",
            timeout=a.connect_timeout + 30,
            url=ws_url(port),
            count=n,
            roomSize=a.room_size,
            roomPrefix=prefix,
            join=not a.mem_no_join,
            concurrency=a.connect_concurrency,
            perIp=per_ip(ctx, n),
            timeoutMs=20000,
            totalTimeoutMs=int(a.connect_timeout * 1000),
        )
        wall = time.monotonic() - t0
        cpu1 = cpu_seconds(srv.pid)
        db1 = srv.db_cpu()
        res["connect"] = {
            "connected": r["connected"],
            "failed": r["failed"],
            "not_attempted": r["skipped"],
            "errors": r["errors"],
            "elapsed_s": r["elapsedMs"] / 1000,
            "rate_per_s": r["rate"],
            "server_cpu_s": cpu1 - cpu0,
            "server_cpu_us_per_conn": 1e6 * (cpu1 - cpu0) / max(1, r["connected"]),
            "server_cpu_util": (cpu1 - cpu0) / wall,
            "per_worker": r["perWorker"],
        }
        if db0 is not None and db1 is not None:
            dbd = collab.pg_cpu_delta(db0, db1)
            res["connect"]["db_cpu_s"] = dbd
            res["connect"]["db_cpu_us_per_conn"] = 1e6 * dbd["total"] / max(1, r["connected"])
        time.sleep(a.settle)
        after = mem_kib(srv.pid)
        live = gen.call("total")["live"]
        connected = max(1, r["connected"])
        res["rss_before_kib"] = before.get("VmRSS")
        res["rss_after_kib"] = after.get("VmRSS")
        res["pss_before_kib"] = before.get("Pss")
        res["pss_after_kib"] = after.get("Pss")
        res["live_after_settle"] = live
        res["server_fds"] = fd_count(srv.pid)
        res["rss_per_conn_kib"] = (after["VmRSS"] - before["VmRSS"]) / connected
        if "Pss" in after and "Pss" in before:
            res["pss_per_conn_kib"] = (after["Pss"] - before["Pss"]) / connected
        gen.call("close", timeout=60)
        time.sleep(a.settle)
        res["rss_after_close_kib"] = mem_kib(srv.pid).get("VmRSS")
        res["server_alive"] = srv.alive()
    finally:
        if gen:
            gen.stop()
        res["server_rc"] = srv.stop()
    return res


def drain(gen: Generator, max_s: float) -> float:
    """Wait until deliveries stop arriving (bounded); returns seconds waited."""
    t0 = time.monotonic()
    last = gen.call("total")["totalRecv"]
    quiet_since = time.monotonic()
    while time.monotonic() - t0 < max_s:
        time.sleep(0.2)
        tot = gen.call("total")
        cur = tot["totalRecv"]
        if cur != last:
            last, quiet_since = cur, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0 and not tot.get("outstanding"):
            break  # no delivery for 1 s and (collab) every edit acknowledged
    return time.monotonic() - t0


def one_step(ctx: Ctx, srv: Server, gen: Generator, delivered_rate: float) -> dict[str, Any]:
    a = ctx.args
    fanout = a.room_size - 1
    send_rate = delivered_rate / fanout
    gen.call("start", rate=send_rate)
    time.sleep(a.warmup)
    gen.call("mark")
    srv.gc_stats()
    pg0 = srv.pg_stats()
    db0 = srv.db_cpu()
    c0 = core_busy(a.server_core), core_busy(a.gen_core)
    s0, g0, t0 = cpu_seconds(srv.pid), gen.cpu(), time.monotonic()
    time.sleep(a.duration)
    m = gen.call("mark")
    s1, g1, t1 = cpu_seconds(srv.pid), gen.cpu(), time.monotonic()
    c1 = core_busy(a.server_core), core_busy(a.gen_core)
    db1 = srv.db_cpu()
    pg1 = srv.pg_stats()
    gc_stats = srv.gc_stats()
    gen.call("stop")
    drained = drain(gen, a.drain_max)
    after_drain = gen.call("mark") if ctx.collab else None
    wall = t1 - t0
    recv = m["recv"]
    lat = m["latency"]
    step = {
        "offered_delivered_per_s": delivered_rate,
        "offered_sends_per_s": send_rate,
        "sent_per_s": m["sent"] / wall,
        "skipped_sends": m["skipped"],
        "delivered_per_s": recv / wall,
        "delivered": recv,
        "server_cpu_s": s1 - s0,
        "server_cpu_util": (s1 - s0) / wall,
        "server_us_per_msg": 1e6 * (s1 - s0) / recv if recv else None,
        "gen_cpu_util": (g1 - g0) / wall,
        "gen_us_per_msg": 1e6 * (g1 - g0) / recv if recv else None,
        "latency_ms": {k: v for k, v in lat.items() if k != "count"},
        "bad_packets": m["bad"],
        "pings_answered": m["pings"],
        "closed_during_step": m["closed"],
        "live_clients": m["live"],
        "drain_s": drained,
        "wall_s": wall,
        "server_alive": srv.alive(),
        "loadavg_1m": os.getloadavg()[0],
    }
    # Noise: what else ran on the two pinned cores during the window (the
    # machine is shared; PostgreSQL, when used, is unpinned and lands here too).
    if c0[0] is not None and c1[0] is not None:
        step["others_on_server_core_util"] = max(0.0, (c1[0] - c0[0]) - (s1 - s0)) / wall
    if c0[1] is not None and c1[1] is not None:
        step["others_on_gen_core_util"] = max(0.0, (c1[1] - c0[1]) - (g1 - g0)) / wall
    if gc_stats is not None:
        gc_stats["time_pct"] = 100 * gc_stats["total_ms"] / 1000 / wall
        step["gc"] = gc_stats
    if ctx.collab:
        step["ack_latency_ms"] = {k: v for k, v in m["ackLatency"].items() if k != "count"}
        step["acks_ok"] = m["acks"]
        step["ack_errors"] = m["ackErrors"]
        step["ack_error_samples"] = m["ackErrorSamples"]
        step["unmatched_acks"] = m["unmatchedAcks"]
        step["other_events"] = m["otherEvents"]
        step["unacked_at_end"] = m["outstanding"]
        # Every edit sent in the window should reach the other room - 1 members.
        step["expected_deliveries"] = m["sent"] * fanout
        if after_drain is not None:
            step["after_window"] = {
                "recv": after_drain["recv"],
                "acks": after_drain["acks"],
                "ack_errors": after_drain["ackErrors"],
                "unacked_after_drain": after_drain["outstanding"],
            }
        if db0 is not None and db1 is not None:
            dbd = collab.pg_cpu_delta(db0, db1)
            step["db_cpu_s"] = dbd
            step["db_cpu_util"] = dbd["total"] / wall
            step["db_us_per_msg"] = 1e6 * dbd["total"] / recv if recv else None
        srv_us = step["server_us_per_msg"]
        db_us = step.get("db_us_per_msg")
        step["total_us_per_msg"] = None if srv_us is None else srv_us + (db_us or 0.0)
        if pg0 is not None and pg1 is not None:
            # The reference's INSERTs are fire-and-forget: were they keeping up?
            step["pg_inserts"] = {
                "completed_in_window": pg1["completed"] - pg0["completed"],
                "failed_in_window": pg1["failed"] - pg0["failed"],
                "in_flight_start": pg0["inFlight"],
                "in_flight_end": pg1["inFlight"],
                "edits_sent_in_window": m["sent"],
                "last_error": pg1.get("lastError"),
            }
    p95 = lat.get("p95_ms")
    reasons = []
    if ctx.collab and m["ackErrors"]:
        reasons.append(f"{m['ackErrors']} edits refused (ack ok:false)")
    if recv < a.sat_ratio * delivered_rate * wall:
        reasons.append(f"delivered {recv / wall:.0f}/s < {a.sat_ratio:.0%} of offered")
    if p95 is None or p95 > a.p95_limit_ms:
        reasons.append(f"p95 {p95 if p95 is None else round(p95, 1)} ms > {a.p95_limit_ms} ms")
    if m["closed"] or not srv.alive():
        reasons.append("connections closed / server died")
    step["saturated"] = bool(reasons)
    step["saturation_reasons"] = reasons
    if step["gen_cpu_util"] > 0.9:
        step["warning"] = "generator core >90% busy: results may be generator-bound"
    return step


def fmt_step(name: str, st: dict[str, Any]) -> str:
    lat = st["latency_ms"]

    def g(k: str) -> str:
        v = lat.get(k)
        return "-" if v is None else f"{v:.2f}"

    us = st["server_us_per_msg"]
    extra = ""
    if "ack_latency_ms" in st:
        db = st.get("db_us_per_msg")
        ack95 = st["ack_latency_ms"].get("p95_ms")
        extra = (
            f"  db {'-' if db is None else f'{db:.1f}'} us/msg"
            f"  ack p95 {'-' if ack95 is None else f'{ack95:.2f}'} ms"
        )
        other = st.get("others_on_server_core_util")
        if other is not None:
            extra += f"  others on srv core {other:.0%}"
    return (
        f"  [{name}] offered {st['offered_delivered_per_s']:>8.0f}/s  delivered "
        f"{st['delivered_per_s']:>8.0f}/s  srv {st['server_cpu_util']:>4.0%} "
        f"{'-' if us is None else f'{us:.1f}'} us/msg  gen {st['gen_cpu_util']:>4.0%}  "
        f"p50 {g('p50_ms')} p95 {g('p95_ms')} p99 {g('p99_ms')} ms"
        + extra
        + ("  SATURATED: " + "; ".join(st["saturation_reasons"]) if st["saturated"] else "")
    )


class LoadRig:
    """A fresh server plus a generator with the load clients connected."""

    def __init__(self, ctx: Ctx, name: str, port: int, phase: str) -> None:
        a = ctx.args
        prefix = "load-" if ctx.collab else "room-"
        self.srv = start_server(ctx, name, port, phase, (prefix, a.load_conns))
        self.gen: Generator | None = None
        try:
            n = a.load_conns
            self.gen = start_generator(
                ctx, max(1, math.ceil(n / a.clients_per_worker)), phase, name
            )
            warm_up(ctx, self.gen, port)
            self.connect = self.gen.call(
                "connect",
                timeout=a.connect_timeout + 30,
                url=ws_url(port),
                count=n,
                roomSize=a.room_size,
                roomPrefix=prefix,
                concurrency=a.connect_concurrency,
                perIp=per_ip(ctx, n),
                totalTimeoutMs=int(a.connect_timeout * 1000),
            )
        except Exception:
            self.close()
            raise

    def close(self) -> int | None:
        if self.gen:
            self.gen.stop()
        return self.srv.stop()


def load_phase(ctx: Ctx, name: str, port: int) -> dict[str, Any]:
    a = ctx.args
    res: dict[str, Any] = {"clients": a.load_conns, "room_size": a.room_size, "steps": []}
    rates = [float(x) for x in a.rates.split(",") if x.strip()]
    step_cost = a.warmup + a.duration + a.drain_max + 2
    rig = LoadRig(ctx, name, port, "load")
    res["server_info"] = rig.srv.info
    try:
        res["connected"] = rig.connect["connected"]
        if rig.connect["failed"]:
            res["connect_errors"] = rig.connect["errors"]
        assert rig.gen is not None
        for rate in rates:
            if ctx.time_left() < step_cost * 2:
                ctx.notes.append(f"{name}: stopped stepping at {rate:.0f}/s: global deadline")
                break
            st = one_step(ctx, rig.srv, rig.gen, rate)
            res["steps"].append(st)
            print(fmt_step(name, st), flush=True)
            if st["saturated"] or not rig.srv.alive():
                break
        res["server_alive"] = rig.srv.alive()
    finally:
        res["server_rc"] = rig.close()
    if not res["steps"]:
        return res
    sat = [s for s in res["steps"] if s["saturated"]]
    best = max(res["steps"], key=lambda s: s["delivered_per_s"])
    res["saturated"] = bool(sat)
    res["saturation_rate_per_s"] = best["delivered_per_s"]
    if ctx.collab:
        # The headline is the highest step that met every condition (P95 under
        # --p95-limit-ms, delivered >= --sat-ratio of offered, no refused edit,
        # no dropped client); steps are not re-run at half saturation.
        ok = [s for s in res["steps"] if not s["saturated"]]
        res["highest_ok_step"] = max((s["offered_delivered_per_s"] for s in ok), default=None)
        if not sat:
            ctx.notes.append(
                f"{name}: met the conditions at every step up to {rates[-1]:.0f}/s: "
                "its highest step is a lower bound"
            )
        return res
    if not sat:
        ctx.notes.append(
            f"{name}: did not saturate up to {rates[-1]:.0f}/s; the saturation figure is a lower "
            "bound and 'half' is the step nearest half of it"
        )
        target = best["delivered_per_s"] / 2
        res["half"] = min(res["steps"], key=lambda s: abs(s["delivered_per_s"] - target))
        return res
    if ctx.time_left() < step_cost + 30:
        ctx.notes.append(f"{name}: no half-saturation step: global deadline")
        return res
    # The half-saturation step runs on a fresh server, so the backlog and heap
    # growth of the saturated step cannot leak into it.
    time.sleep(1.0)
    rig = LoadRig(ctx, name, port, "half")
    try:
        assert rig.gen is not None
        st = one_step(ctx, rig.srv, rig.gen, best["delivered_per_s"] / 2)
        st["half_saturation_step"] = True
        print(fmt_step(name + " @half", st), flush=True)
        res["half"] = st
    finally:
        rig.close()
    return res


# --------------------------------------------------------------------------- report


def ratio(x: float | None, base: float | None) -> str:
    if x is None or base is None or base == 0:
        return "-"
    return f"{x / base:.2f}x"


def num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def summary_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float | None], str]]:
    def get(path: list[str]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for s, r in results.items():
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            out[s] = v if isinstance(v, int | float) else None
        return out

    return [
        ("Memory per connection, RSS (KiB)", get(["memory", "rss_per_conn_kib"]), "{:.1f}"),
        ("Memory per connection, PSS (KiB)", get(["memory", "pss_per_conn_kib"]), "{:.1f}"),
        (
            "Connect rate (conn/s, incl. join ack)",
            get(["memory", "connect", "rate_per_s"]),
            "{:.0f}",
        ),
        (
            "Server CPU per connect+join (us)",
            get(["memory", "connect", "server_cpu_us_per_conn"]),
            "{:.0f}",
        ),
        ("Saturation (delivered msg/s, 1 core)", get(["load", "saturation_rate_per_s"]), "{:.0f}"),
        (
            "Server CPU per delivered msg @half sat (us)",
            get(["load", "half", "server_us_per_msg"]),
            "{:.2f}",
        ),
        ("Latency P50 @half sat (ms)", get(["load", "half", "latency_ms", "p50_ms"]), "{:.2f}"),
        ("Latency P95 @half sat (ms)", get(["load", "half", "latency_ms", "p95_ms"]), "{:.2f}"),
        ("Latency P99 @half sat (ms)", get(["load", "half", "latency_ms", "p99_ms"]), "{:.2f}"),
        ("Generator CPU per msg @half sat (us)", get(["load", "half", "gen_us_per_msg"]), "{:.2f}"),
        (
            "Python GC: longest pause @half sat (ms)",
            get(["load", "half", "gc", "max_ms"]),
            "{:.2f}",
        ),
        ("Python GC: time in GC @half sat (%)", get(["load", "half", "gc", "time_pct"]), "{:.2f}"),
    ]


def markdown(doc: dict[str, Any]) -> str:
    results = doc["results"]
    servers = list(results)
    lines = ["# cowrite benchmark", "", f"Command: `{doc['command']}`", ""]
    env = doc["environment"]
    lines.append(
        f"Machine: {env['cpu']} x{env['cpus']}, kernel {env['kernel']}, node {env['node']}, "
        f"python {env['python']}; servers pinned to core {doc['params']['server_core']}, "
        f"generator to core {doc['params']['gen_core']}."
    )
    lines.append("")
    head = ["Metric", *servers]
    if "node" in servers:
        head += [f"{s}/node" for s in servers if s != "node"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for label, vals, fmt in summary_rows(results):
        row = [label] + [num(vals[s], fmt) for s in servers]
        if "node" in servers:
            row += [ratio(vals[s], vals["node"]) for s in servers if s != "node"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for s in servers:
        load = results[s].get("load") or {}
        steps = load.get("steps") or []
        if not steps:
            continue
        lines.append(
            f"## {s}: load steps ({load.get('clients')} clients, rooms of {load.get('room_size')})"
        )
        lines.append("")
        lines.append(
            "| offered msg/s | delivered msg/s | server CPU | us/msg | gen CPU | gen us/msg "
            "| p50 ms | p95 ms | p99 ms | saturated |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        all_steps = list(steps)
        half = load.get("half")
        if half and half.get("half_saturation_step"):
            all_steps.append(half)
        for st in all_steps:
            lat = st["latency_ms"]
            tag = " (half)" if st.get("half_saturation_step") else ""
            lines.append(
                f"| {st['offered_delivered_per_s']:.0f}{tag} | {st['delivered_per_s']:.0f} "
                f"| {st['server_cpu_util']:.0%} | {num(st['server_us_per_msg'], '{:.2f}')} "
                f"| {st['gen_cpu_util']:.0%} | {num(st['gen_us_per_msg'], '{:.2f}')} "
                f"| {num(lat.get('p50_ms'), '{:.2f}')} | {num(lat.get('p95_ms'), '{:.2f}')} "
                f"| {num(lat.get('p99_ms'), '{:.2f}')} "
                f"| {'; '.join(st['saturation_reasons']) or 'no'} |"
            )
        lines.append("")
    for s in servers:
        lines.extend(failure_lines(s, results[s]))
        for st in (results[s].get("load") or {}).get("steps") or []:
            if st.get("warning"):
                lines.append(
                    f"- {s} @ {st['offered_delivered_per_s']:.0f}/s: {st['warning']} "
                    f"({st['gen_cpu_util']:.0%})"
                )
    lines.extend(closing_lines(doc))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def environment(args: argparse.Namespace) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node_v = subprocess.run([args.node, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "node": node_v,
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "nofile_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scenario",
        choices=("broadcast", "collab"),
        default="broadcast",
        help="broadcast: room broadcast on node,pysio,cowrite; collab: the collaboration "
        "path on nodeadr,nodeadr-pg,cowrite-sqlite,cowrite-pg (issue 9)",
    )
    p.add_argument(
        "--servers",
        default=None,
        help="comma list [broadcast: node,pysio,cowrite; collab: "
        "nodeadr,nodeadr-pg,cowrite-sqlite,cowrite-pg]",
    )
    p.add_argument(
        "--conns", type=int, default=10000, help="idle clients for the memory test (0=skip)"
    )
    p.add_argument(
        "--load-conns",
        type=int,
        default=None,
        help="clients for the load test (0=skip) [broadcast 500, collab 1000]",
    )
    p.add_argument("--room-size", type=int, default=5)
    p.add_argument(
        "--rates",
        default=None,
        help=f"delivered msg/s steps, comma separated [broadcast {DEFAULT_RATES}; "
        f"collab {collab.DEFAULT_COLLAB_RATES}]",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per step")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring each step")
    p.add_argument("--drain-max", type=float, default=5.0, help="max seconds to drain after a step")
    p.add_argument("--payload-bytes", type=int, default=100, help="JSON payload size of each msg")
    p.add_argument(
        "--p95-limit-ms",
        type=float,
        default=None,
        help="P95 above this = saturated [broadcast 100, collab 50]",
    )
    p.add_argument(
        "--sat-ratio",
        type=float,
        default=0.9,
        help="delivered below this fraction of offered = saturated",
    )
    p.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight")
    p.add_argument(
        "--connect-timeout", type=float, default=180.0, help="bound on opening all conns"
    )
    p.add_argument("--mem-no-join", action="store_true", help="memory test: do not join rooms")
    p.add_argument(
        "--clients-per-worker",
        type=int,
        default=8000,
        help="generator processes = ceil(clients / this) (fd limit per process)",
    )
    p.add_argument(
        "--per-ip",
        type=int,
        default=25000,
        help="above this many clients, spread source IPs over 127.0.0.2..",
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds to settle before RSS reads")
    p.add_argument("--server-core", type=int, default=0, help="-1 = no pinning")
    p.add_argument("--gen-core", type=int, default=1, help="-1 = no pinning")
    p.add_argument(
        "--py-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop for the Python servers",
    )
    p.add_argument(
        "--client",
        choices=("ws", "raw"),
        default="ws",
        help="generator WebSocket client: ws package, or the minimal rawws.js",
    )
    p.add_argument(
        "--cowrite-tune-gc",
        choices=("on", "off"),
        default="on",
        help="apply cowrite.runtime.tune_gc() in the cowrite server, as `cowrite serve` does",
    )
    p.add_argument("--base-port", type=int, default=3101)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--node", default=shutil.which("node") or "node")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="global time bound [broadcast 1800, collab 3600]",
    )
    g = p.add_argument_group("collab scenario")
    g.add_argument(
        "--pg-admin",
        default="postgresql://127.0.0.1/test",
        help="PostgreSQL URL run.py connects to to create (and drop) one fresh database "
        "per server start",
    )
    g.add_argument(
        "--jwt-secret",
        default=None,
        help="HS256 secret shared by the servers and the generator [random per run]",
    )
    g.add_argument(
        "--cowrite-perms",
        choices=("claim", "store"),
        default="claim",
        help="how cowrite grants the documents: the token's docs claim (what `cowrite "
        "loadtest` does), or roles in the store seeded before the start (a role query "
        "per join, like the reference's permission check)",
    )
    g.add_argument(
        "--cowrite-log-level",
        default="info",
        help="cowrite serve --log-level (info, the default, logs every connect/disconnect)",
    )
    g.add_argument(
        "--node-server-args",
        default="",
        help="extra node flags for the ADR reference server, e.g. "
        "'--cpu-prof --cpu-prof-dir=/tmp/prof' to profile it",
    )
    g.add_argument(
        "--cowrite-redis",
        default=None,
        help="redis://HOST:PORT: cowrite's broker and presence through Redis (its CPU is "
        "counted as database CPU) [off]",
    )
    g.add_argument(
        "--report-steps",
        default="8000,32000",
        help="steps (delivered msg/s) whose CPU and P95 are in the summary table",
    )
    p.add_argument("--out", default="", help="results JSON path (default bench/results/<stamp>)")
    args = p.parse_args(argv)
    is_collab = args.scenario == "collab"
    known = SCENARIO_SERVERS[args.scenario]
    if args.servers is None:
        args.servers = ",".join(known)
    if args.load_conns is None:
        args.load_conns = 1000 if is_collab else 500
    if args.rates is None:
        args.rates = collab.DEFAULT_COLLAB_RATES if is_collab else DEFAULT_RATES
    if args.p95_limit_ms is None:
        args.p95_limit_ms = 50.0 if is_collab else 100.0
    if args.max_seconds is None:
        args.max_seconds = 3600.0 if is_collab else 1800.0
    if is_collab and args.jwt_secret is None:
        args.jwt_secret = collab.new_secret()
    bad = [s for s in args.servers.split(",") if s not in known]
    if bad:
        p.error(f"unknown servers {bad} for --scenario {args.scenario} (known: {known})")
    if args.room_size < 2:
        p.error("--room-size must be >= 2")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "collab" if args.scenario == "collab" else "bench"
    out = Path(args.out) if args.out else BENCH / "results" / f"{kind}-{stamp}.json"
    log_dir = BENCH / "results" / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("NODE_ENV", "production")
    ctx = Ctx(args, env, log_dir, time.monotonic() + args.max_seconds, stamp=stamp)
    command = " ".join(shlex.quote(x) for x in [args.python, str(Path(__file__)), *argv])
    params = dict(vars(args))
    if params.get("jwt_secret"):
        params["jwt_secret"] = "***"
    doc: dict[str, Any] = {
        "command": command,
        "scenario": args.scenario,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": params,
        "environment": environment(args),
        "results": {},
        "notes": ctx.notes,
        "results_file": str(out),
    }
    print(f"# {command}", flush=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        # Unwind through the finally blocks: servers stopped, databases dropped.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run_servers(ctx, doc, out)
    finally:
        if ctx.collab and any(collab.uses_pg(n) for n in args.servers.split(",")):
            left = collab.drop_leftovers(args.pg_admin, stamp)
            if left:
                ctx.notes.append(f"dropped leftover benchmark databases: {left}")
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.write_text(json.dumps(doc, indent=1))
    md = collab.markdown(doc) if ctx.collab else markdown(doc)
    out.with_suffix(".md").write_text(md + "\n")
    print()
    print(md)
    return 0


def run_servers(ctx: Ctx, doc: dict[str, Any], out: Path) -> None:
    args = ctx.args
    for i, name in enumerate(args.servers.split(",")):
        port = args.base_port + i
        r: dict[str, Any] = {}
        doc["results"][name] = r
        try:
            if args.conns > 0:
                print(f"[{name}] memory: {args.conns} clients ...", flush=True)
                r["memory"] = memory_phase(ctx, name, port)
                m = r["memory"]
                c = m.get("connect", {})
                print(
                    f"  [{name}] RSS {m.get('rss_per_conn_kib', 0):.1f} KiB/conn, "
                    f"connect {c.get('rate_per_s', 0):.0f}/s, connected {c.get('connected')}"
                    f" failed {c.get('failed')}",
                    flush=True,
                )
            if args.load_conns > 0:
                print(
                    f"[{name}] load: {args.load_conns} clients, rooms of {args.room_size}",
                    flush=True,
                )
                r["load"] = load_phase(ctx, name, port)
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"
            print(f"  [{name}] ERROR {r['error']}", flush=True)
        out.write_text(json.dumps(doc, indent=1))
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
