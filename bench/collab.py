"""The collaboration scenario of bench/run.py (``--scenario collab``, issue 9).

The servers under test, how each is launched (fresh benchmark database or
SQLite file per start, created here and dropped after), the grants the
generator's users need, the PostgreSQL CPU sampler, and the report.

Servers:

  nodeadr         ADR-003's Node code (servers/node_adr_server.js), no store:
                  permissions in an in-memory map, no INSERT.
  nodeadr-pg      the same with PostgreSQL: permission check is a query on the
                  ``permissions`` table, one fire-and-forget INSERT per edit
                  through a ``pg`` Pool (the reference of the ratios).
  cowrite-sqlite  ``cowrite serve`` (the application) with ``--store
                  sqlite:///<tmpdir>/bench.db``.
  cowrite-pg      ``cowrite serve`` with ``--store postgresql://.../<fresh db>``.

Users and documents: generator client ``i`` of a connect call with prefix ``P``
is user ``u-P<i>`` in document ``P<i // room_size>`` (loadgen/main.js); every
such pair is granted ``editor`` (nodeadr: the permissions map/table; cowrite:
the token's ``docs`` claim, or the store's roles with ``--cowrite-perms store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proccpu import cpu_seconds
from reportlines import closing_lines, failure_lines

BENCH = Path(__file__).resolve().parent

COLLAB_SERVERS = ("nodeadr", "nodeadr-pg", "cowrite-sqlite", "cowrite-pg")
REFERENCE = "nodeadr-pg"
DEFAULT_COLLAB_RATES = "2000,4000,8000,16000,24000,32000,40000,48000,64000,80000,96000,128000"
# Template of one edit's operation (loadgen/worker.js); the "text" is padded so
# that the operation's JSON is --payload-bytes long.
OP_TEMPLATE = '{"type":"insert","pos":123,"text":"","t":1234567.123}'


def uses_pg(name: str) -> bool:
    return name.endswith("-pg")


def grant_pairs(groups: list[tuple[str, int]], room_size: int) -> Iterator[tuple[str, str]]:
    """(document, user) for every client the generator opens with these (prefix, count)."""
    for prefix, count in groups:
        for i in range(count):
            yield f"{prefix}{i // room_size}", f"u-{prefix}{i}"


# --------------------------------------------------------------------------- PostgreSQL


def db_url(admin_url: str, dbname: str) -> str:
    u = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _admin(admin_url: str, sql: str) -> None:
    """Run one statement on the administration connection (CREATE/DROP DATABASE,
    CHECKPOINT)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(go())


def create_db(admin_url: str, dbname: str) -> None:
    _admin(admin_url, f'CREATE DATABASE "{dbname}"')
    # Every server starts right after a checkpoint: the WAL of the server
    # measured before (nodeadr-pg's backlog of INSERTs at a saturated step)
    # must not put a checkpoint, and its full-page writes, into the next
    # server's steps.
    _admin(admin_url, "CHECKPOINT")


def drop_db(admin_url: str, dbname: str) -> None:
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def seed_nodeadr_pg(url: str, pairs: list[tuple[str, str]]) -> None:
    """Apply the ADR reference's schema and grant every (document, user) pair."""
    import asyncpg

    schema = (BENCH / "servers" / "node_adr_schema.sql").read_text()

    async def go() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(schema)
            docs = sorted({d for d, _ in pairs})
            await conn.copy_records_to_table(
                "documents", records=[(d,) for d in docs], columns=["id"]
            )
            await conn.copy_records_to_table(
                "permissions", records=pairs, columns=["document_id", "user_id"]
            )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    _run(go())


_AUX = ("checkpointer", "background writer", "walwriter", "autovacuum launcher")


def pg_cpu(dbname: str) -> dict[int, tuple[str, float]]:
    """utime+stime of PostgreSQL processes serving ``dbname``: its backends
    (process title ``postgres: ... USER DBNAME HOST ...``, autovacuum workers
    included) as ``backend``, and the cluster's shared writers (checkpointer,
    background writer, WAL writer, autovacuum launcher) as ``aux``."""
    out: dict[int, tuple[str, float]] = {}
    for pid, title, cpu in _processes(lambda comm: comm.strip() == "postgres"):
        if f" {dbname} " in f" {title.strip()} ":
            out[pid] = ("backend", cpu)
        elif any(title.strip().endswith(a) for a in _AUX):
            out[pid] = ("aux", cpu)
    return out


def redis_cpu(redis_url: str) -> dict[int, tuple[str, float]]:
    """utime+stime of the redis-server listening on ``redis_url``'s port (its
    process title is ``redis-server HOST:PORT``); the instance is shared with
    whatever else uses it."""
    port = urllib.parse.urlsplit(redis_url).port or 6379
    return {
        pid: ("redis", cpu)
        for pid, title, cpu in _processes(lambda comm: comm.startswith("redis-server"))
        if re.search(rf":{port}\b", title)
    }


def _processes(comm_matches: Callable[[str], bool]) -> Iterator[tuple[int, str, float]]:
    """(pid, command line, utime+stime seconds) of the processes whose
    ``/proc/PID/comm`` ``comm_matches``; processes that exit meanwhile are skipped."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not comm_matches(f.read()):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
            cpu = cpu_seconds(pid)
        except OSError:
            continue
        yield pid, title, cpu


def pg_cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two samples, by kind; a process started in
    between counts from zero (a backend that exited in between is lost: pools
    keep theirs open for the whole run)."""
    d = {"backend": 0.0, "aux": 0.0, "redis": 0.0}
    for pid, (kind, cpu) in after.items():
        prev = before.get(pid)
        d[kind] += cpu - (prev[1] if prev and prev[0] == kind else 0.0)
    d["total"] = d["backend"] + d["aux"] + d["redis"]
    return d


# --------------------------------------------------------------------------- launching


@dataclass
class Launch:
    """How to start one collab server, and what to undo after it stopped."""

    cmd: list[str]
    env: dict[str, str]
    dbname: str | None = None  # PostgreSQL database whose backends are the "DB CPU"
    redis_url: str | None = None  # its redis-server's CPU counts as database CPU too
    ready: str = "json"  # "json": a {"listening": true} line; "cowrite": banner + /readyz
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        self.cleanups.clear()


_db_counter = 0


def _db_prefix(stamp: str) -> str:
    return f"cowrite_bench_{re.sub(r'[^0-9a-z]', '', stamp.lower())}_{os.getpid()}_"


def new_dbname(stamp: str) -> str:
    global _db_counter
    _db_counter += 1
    return f"{_db_prefix(stamp)}{_db_counter}"


def drop_leftovers(admin_url: str, stamp: str) -> list[str]:
    """Drop this run's benchmark databases that are still there (after a crash
    between CREATE and DROP); returns their names."""
    import asyncpg

    prefix = _db_prefix(stamp)

    async def go() -> list[str]:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
            )
            names = [str(r["datname"]) for r in rows]
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return names
        finally:
            await conn.close()

    try:
        return list(_run(go()))
    except Exception as exc:  # the report still gets written
        return [f"(could not check: {exc})"]


def prepare(
    name: str,
    args: Any,
    port: int,
    pin: list[str],
    groups: list[tuple[str, int]],
    stamp: str,
    log_dir: Path,
) -> Launch:
    """Everything a fresh start of ``name`` needs: database/file, grants, command."""
    pairs = list(grant_pairs(groups, args.room_size))
    env = {"JWT_SECRET": args.jwt_secret}
    launch = Launch(cmd=[], env=env)
    try:
        if name in ("nodeadr", "nodeadr-pg"):
            node_args = shlex.split(args.node_server_args or "")
            cmd = [*pin, args.node, *node_args, "servers/node_adr_server.js", "--port", str(port)]
            cmd += ["--host", "127.0.0.1"]
            if name == "nodeadr":
                tmp = Path(tempfile.mkdtemp(prefix="nodeadr-", dir=log_dir))
                launch.cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
                perms = tmp / "permissions.tsv"
                perms.write_text("".join(f"{d}\t{u}\n" for d, u in pairs))
                cmd += ["--store", "none", "--permissions", str(perms)]
            else:
                dbname = new_dbname(stamp)
                create_db(args.pg_admin, dbname)
                launch.cleanups.append(lambda: drop_db(args.pg_admin, dbname))
                launch.dbname = dbname
                url = db_url(args.pg_admin, dbname)
                seed_nodeadr_pg(url, pairs)
                cmd += ["--store", "postgres", "--pg", url]
            launch.cmd = cmd
            launch.info = {"grants": len(pairs)}
            return launch
        if name in ("cowrite-sqlite", "cowrite-pg"):
            cowrite = str(Path(args.python).parent / "cowrite")
            if name == "cowrite-sqlite":
                tmp = Path(tempfile.mkdtemp(prefix="cowrite-sqlite-"))
                launch.cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
                store = f"sqlite:///{tmp}/bench.db"
            else:
                dbname = new_dbname(stamp)
                create_db(args.pg_admin, dbname)
                launch.cleanups.append(lambda: drop_db(args.pg_admin, dbname))
                launch.dbname = dbname
                store = db_url(args.pg_admin, dbname)
            env.update(
                {
                    "COWRITE_AUTH_SECRET": args.jwt_secret,
                    "COWRITE_AUTH_ALGORITHMS": "HS256",
                    "COWRITE_AUTH_DOCS_CLAIM": "1" if args.cowrite_perms == "claim" else "0",
                    # Raised limits (cowrite serve --help / cowrite.config):
                    # the generator's clients all come from 127.0.0.x, which
                    # per_ip_exempt covers by default; the admission limits
                    # are raised explicitly as well. max_handshakes (2000 in
                    # flight) is far above the generator's 100; the per-
                    # connection edit limit (200/s, burst 1000) is not a
                    # setting: the default shape sends ~4 edits/s per client.
                    "COWRITE_PER_IP_CONNECTIONS": "1000000",
                    "COWRITE_PER_IP_RATE": "1000000",
                    "COWRITE_PER_IP_BURST": "1000000",
                    "COWRITE_DATA_DIR": str(log_dir / f"cowrite-data-{port}"),
                }
            )
            if args.cowrite_redis:
                # Broker and presence through Redis (the scale-out set-up), under
                # a key prefix of its own; its CPU counts as database CPU.
                env["COWRITE_REDIS_URL"] = args.cowrite_redis
                env["COWRITE_REDIS_PREFIX"] = f"{new_dbname(stamp)}:"
                launch.redis_url = args.cowrite_redis
            if args.cowrite_perms == "store":
                seed_cowrite_store(args.python, store, pairs, env)
            cmd = [*pin, cowrite, "serve", "--production", "--port", str(port)]
            cmd += ["--host", "127.0.0.1", "--store", store, "--cors-origin", "http://localhost"]
            cmd += ["--log-level", args.cowrite_log_level]
            if args.py_loop == "asyncio":
                cmd.append("--no-uvloop")
            launch.cmd = cmd
            launch.ready = "cowrite"
            launch.info = {
                "store": store.split("@")[-1],
                "perms": args.cowrite_perms,
                "redis": bool(args.cowrite_redis),
            }
            return launch
    except BaseException:
        launch.cleanup()
        raise
    raise ValueError(name)


def seed_cowrite_store(
    python: str, store: str, pairs: list[tuple[str, str]], env: dict[str, str]
) -> None:
    """Grant the pairs through cowrite's own store interface (servers/cowrite_seed.py)."""
    import subprocess

    payload = "".join(f"{d}\t{u}\n" for d, u in pairs)
    full_env = {**os.environ, **env}
    src = str(BENCH.parent / "src")
    full_env["PYTHONPATH"] = src + (
        os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else ""
    )
    subprocess.run(
        [python, str(BENCH / "servers" / "cowrite_seed.py"), store],
        input=payload,
        text=True,
        check=True,
        env=full_env,
        timeout=600,
    )


def new_secret() -> str:
    return secrets.token_urlsafe(48)


# --------------------------------------------------------------------------- report


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def inserts_behind(st: dict[str, Any] | None) -> bool:
    """Whether the reference's fire-and-forget INSERTs piled up during the step."""
    ins = st.get("pg_inserts") if st else None
    return bool(ins and ins["in_flight_end"] > max(100, 2 * ins["in_flight_start"]))


def persisted_db_us(st: dict[str, Any]) -> float | None:
    """The reference's database CPU per delivered message counted per INSERT
    it completed in the window, for every edit sent, when it completed fewer
    than it was sent (never lowered when it was catching up on an earlier
    step's backlog instead); else None."""
    ins, db_us = st.get("pg_inserts"), st.get("db_us_per_msg")
    if not ins or db_us is None:
        return None
    done, sent = ins["completed_in_window"], ins["edits_sent_in_window"]
    return db_us * sent / done if 0 < done < sent else None


def _step_at(load: dict[str, Any], rate: float) -> dict[str, Any] | None:
    for st in load.get("steps") or []:
        if abs(st["offered_delivered_per_s"] - rate) < 0.5:
            return dict(st)
    return None


def summary(doc: dict[str, Any]) -> list[tuple[str, dict[str, float | None], str, bool]]:
    """(label, value per server, format, whether a ratio to the reference means anything)."""
    results = doc["results"]
    p95_limit = doc["params"]["p95_limit_ms"]

    def val(name: str, path: list[str]) -> float | None:
        v: Any = results[name]
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        return float(v) if isinstance(v, int | float) else None

    rows: list[tuple[str, dict[str, float | None], str, bool]] = []
    steps = [float(x) for x in str(doc["params"]["report_steps"]).split(",") if x.strip()]
    for rate in steps:
        at: dict[str, dict[str, Any] | None] = {
            s: _step_at(results[s].get("load") or {}, rate) for s in results
        }

        def pick(key: str, at: dict[str, dict[str, Any] | None] = at) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for s, st in at.items():
                v = st.get(key) if st else None
                out[s] = float(v) if isinstance(v, int | float) else None
            return out

        def lat(
            key: str, q: str, at: dict[str, dict[str, Any] | None] = at
        ) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for s, st in at.items():
                v = (st.get(key) or {}).get(q) if st else None
                out[s] = float(v) if isinstance(v, int | float) else None
            return out

        def redis_part(at: dict[str, dict[str, Any] | None] = at) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for s, st in at.items():
                db = st.get("db_cpu_s") if st else None
                n = st.get("delivered") if st else None
                out[s] = 1e6 * db["redis"] / n if db and n and "redis" in db else None
            return out

        r = f"{rate:,.0f}"
        rows += [
            (
                f"{r}/s: server CPU per delivered remote-edit (us)",
                pick("server_us_per_msg"),
                "{:.1f}",
                True,
            ),
            (
                f"{r}/s: database CPU per delivered remote-edit (us)",
                pick("db_us_per_msg"),
                "{:.1f}",
                False,
            ),
            *(
                [
                    (
                        f"{r}/s: ... of which Redis (us)",
                        redis_part(at),
                        "{:.1f}",
                        False,
                    )
                ]
                if doc["params"].get("cowrite_redis")
                else []
            ),
            (
                f"{r}/s: server + database CPU per delivered (us)",
                pick("total_us_per_msg"),
                "{:.1f}",
                True,
            ),
            (f"{r}/s: P50 edit -> remote-edit (ms)", lat("latency_ms", "p50_ms"), "{:.2f}", True),
            (f"{r}/s: P95 edit -> remote-edit (ms)", lat("latency_ms", "p95_ms"), "{:.2f}", True),
            (f"{r}/s: P99 edit -> remote-edit (ms)", lat("latency_ms", "p99_ms"), "{:.2f}", True),
            (f"{r}/s: P95 edit -> ack (ms)", lat("ack_latency_ms", "p95_ms"), "{:.2f}", True),
            (f"{r}/s: generator CPU per delivered (us)", pick("gen_us_per_msg"), "{:.1f}", False),
        ]
    rows += [
        (
            f"highest step with P95 < {p95_limit:g} ms (delivered msg/s)",
            {s: val(s, ["load", "highest_ok_step"]) for s in results},
            "{:,.0f}",
            True,
        ),
        (
            "connect + auth + join per second (100 in flight)",
            {s: val(s, ["memory", "connect", "rate_per_s"]) for s in results},
            "{:,.0f}",
            True,
        ),
        (
            "server CPU per connect + auth + join (us)",
            {s: val(s, ["memory", "connect", "server_cpu_us_per_conn"]) for s in results},
            "{:.0f}",
            True,
        ),
        (
            "database CPU per connect + auth + join (us)",
            {s: val(s, ["memory", "connect", "db_cpu_us_per_conn"]) for s in results},
            "{:.0f}",
            False,
        ),
        (
            f"KB per joined connection at {doc['params']['conns']:,} (RSS)",
            {s: val(s, ["memory", "rss_per_conn_kib"]) for s in results},
            "{:.1f}",
            True,
        ),
    ]
    return rows


def targets(doc: dict[str, Any]) -> list[str]:
    """Issue 9's targets, checked against this run (Markdown table lines)."""
    results = doc["results"]
    base = results.get("nodeadr")
    out: list[str] = []

    def step(name: str, rate: float) -> dict[str, Any] | None:
        return _step_at(results[name].get("load") or {}, rate) if name in results else None

    def row(target: str, value: float | None, shown: str, met: bool) -> None:
        if value is None:
            out.append(f"| {target} | not measured | - |")
        else:
            out.append(f"| {target} | {shown} | {'yes' if met else 'NO'} |")

    for name, p95_max in (("cowrite-sqlite", 2.0), ("cowrite-pg", 5.0)):
        if name not in results:
            continue
        for rate in (8000.0, 32000.0):
            mine, theirs = step(name, rate), step(REFERENCE, rate)
            a = mine.get("total_us_per_msg") if mine else None
            b = theirs.get("total_us_per_msg") if theirs else None
            r = a / b if a is not None and b else None
            ins = theirs.get("pg_inserts") if theirs else None
            behind = inserts_behind(theirs)
            db_done = persisted_db_us(theirs) if theirs and behind else None
            persisted = theirs["server_us_per_msg"] + db_done if theirs and db_done else None
            shown = "" if r is None else f"{a:.1f} / {b:.1f} us = {r:.2f}x"
            if behind and ins and r is not None:
                shown += (
                    f" (the reference's INSERTs fell behind: {ins['completed_in_window']:,} of "
                    f"{ins['edits_sent_in_window']:,} done in the window"
                )
                if persisted and a is not None:
                    # Its database CPU per INSERT it completed, for every edit.
                    r = a / persisted
                    shown += f"; per INSERT done: {a:.1f} / {persisted:.1f} us = {r:.2f}x"
                shown += ")"
            row(
                f"{name}: server + DB CPU per delivered at {rate:,.0f}/s <= 0.5x {REFERENCE}",
                r,
                shown,
                r is not None and r <= 0.5,
            )
        st = step(name, 32000.0)
        p95 = (st.get("latency_ms") or {}).get("p95_ms") if st else None
        row(
            f"{name}: P95 edit -> remote-edit at 32,000/s < {p95_max:g} ms",
            p95,
            f"{p95:.2f} ms" if p95 is not None else "",
            p95 is not None and p95 < p95_max,
        )
        load = results[name].get("load") or {}
        bload = (base.get("load") or {}) if base else {}
        hi = load.get("highest_ok_step") or (0.0 if load.get("steps") else None)
        bhi = bload.get("highest_ok_step")
        hr = hi / bhi if hi is not None and bhi else None
        bounds = [
            f"{n} did not fail any step (a lower bound)"
            for n, ld in ((name, load), ("nodeadr", bload))
            if ld.get("steps") and not ld.get("saturated")
        ]
        row(
            f"{name}: highest step with P95 < 50 ms >= 1.3x nodeadr's",
            hr,
            (f"{hi:,.0f} / {bhi:,.0f} = {hr:.2f}x" if hr is not None else "")
            + (f" ({'; '.join(bounds)})" if bounds else ""),
            hr is not None and hr >= 1.3,
        )
        c = (results[name].get("memory") or {}).get("connect") or {}
        srv = c.get("server_cpu_us_per_conn")
        db = c.get("db_cpu_us_per_conn")
        joins = c.get("rate_per_s")
        if name == "cowrite-sqlite":
            row(
                f"{name}: connect + auth + join >= 3,000/s per core",
                joins,
                f"{joins:,.0f}/s" if joins is not None else "",
                joins is not None and joins >= 3000,
            )
            row(
                f"{name}: server CPU per join <= 250 us",
                srv,
                f"{srv:.0f} us" if srv is not None else "",
                srv is not None and srv <= 250,
            )
        else:
            redis = " (target is with Redis: --cowrite-redis)"
            redis = "" if doc["params"].get("cowrite_redis") else redis
            row(
                f"{name}: server CPU per join <= 400 us{redis}",
                srv,
                f"{srv:.0f} us" if srv is not None else "",
                srv is not None and srv <= 400,
            )
            row(
                f"{name}: database CPU per join <= 150 us{redis}",
                db,
                f"{db:.0f} us" if db is not None else "",
                db is not None and db <= 150,
            )
    if out:
        out = ["| issue 9 target | this run | met |", "|---|---|---|", *out]
    return out


def markdown(doc: dict[str, Any]) -> str:
    results = doc["results"]
    servers = list(results)
    prm = doc["params"]
    env = doc["environment"]
    lines = ["# cowrite benchmark: collaboration scenario (issue 9)", ""]
    lines.append(f"Command: `{doc['command']}`")
    lines.append("")
    lines.append(
        f"Machine: {env['cpu']} x{env['cpus']}, kernel {env['kernel']}, node {env['node']}, "
        f"python {env['python']}; servers pinned to core {prm['server_core']}, generator to "
        f"core {prm['gen_core']}, PostgreSQL not pinned. {prm['load_conns']:,} clients in rooms "
        f"of {prm['room_size']} (fan-out {prm['room_size'] - 1}), ~{prm['payload_bytes']}-byte "
        f"operations, {prm['duration']:g} s per step; cowrite permissions: {prm['cowrite_perms']}, "
        f"log level {prm['cowrite_log_level']}, Redis "
        f"{'at ' + prm['cowrite_redis'] if prm.get('cowrite_redis') else 'off'}."
    )
    lines.append("")
    ref = REFERENCE if REFERENCE in servers else None
    head = ["Metric", *servers]
    if ref:
        head += [f"{s} / {ref}" for s in servers if s != ref]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for label, vals, fmt, ratio_ok in summary(doc):
        row = [label] + [_num(vals[s], fmt) for s in servers]
        if ref:
            base = vals[ref]
            for s in servers:
                if s == ref:
                    continue
                v = vals[s]
                ok = ratio_ok and v is not None and base
                row.append(f"{v / base:.2f}x" if ok and v is not None and base else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Database CPU: utime+stime of the PostgreSQL backends serving the server's own "
        "benchmark database plus the cluster's checkpointer, background writer, WAL writer "
        "and autovacuum launcher (shared with anything else using the cluster), plus, with "
        "--cowrite-redis, the redis-server's CPU (shared too); for SQLite "
        "it is inside the server's own CPU. Ratios compare like with like (server + "
        "database CPU against the reference's server + database CPU)."
    )
    lines.append("")
    tl = targets(doc)
    if tl:
        lines += ["## Issue 9 targets in this run", "", *tl, ""]
    for s in servers:
        load = results[s].get("load") or {}
        steps = load.get("steps") or []
        if not steps:
            continue
        lines.append(
            f"## {s}: steps ({load.get('clients')} clients, rooms of {load.get('room_size')})"
        )
        lines.append("")
        lines.append(
            "| offered msg/s | delivered msg/s | server CPU | server us/msg | DB CPU | DB us/msg "
            "| gen CPU | others on srv/gen core | p50 ms | p95 ms | p99 ms | ack p50 ms "
            "| ack p95 ms | refused | DB backlog | saturated |"
        )
        lines.append("|" + "---|" * 16)
        for st in steps:
            lat = st["latency_ms"]
            ack = st.get("ack_latency_ms") or {}
            ins = st.get("pg_inserts")
            backlog = f"{ins['in_flight_start']}->{ins['in_flight_end']}" if ins else "-"
            lines.append(
                f"| {st['offered_delivered_per_s']:.0f} | {st['delivered_per_s']:.0f} "
                f"| {st['server_cpu_util']:.0%} | {_num(st['server_us_per_msg'], '{:.1f}')} "
                f"| {_num(st.get('db_cpu_util'), '{:.0%}')} | {_num(st.get('db_us_per_msg'), '{:.1f}')} "
                f"| {st['gen_cpu_util']:.0%} "
                f"| {_num(st.get('others_on_server_core_util'), '{:.0%}')} / "
                f"{_num(st.get('others_on_gen_core_util'), '{:.0%}')} "
                f"| {_num(lat.get('p50_ms'), '{:.2f}')} | {_num(lat.get('p95_ms'), '{:.2f}')} "
                f"| {_num(lat.get('p99_ms'), '{:.2f}')} "
                f"| {_num(ack.get('p50_ms'), '{:.2f}')} | {_num(ack.get('p95_ms'), '{:.2f}')} "
                f"| {st.get('ack_errors', 0)} | {backlog} "
                f"| {'; '.join(st['saturation_reasons']) or 'no'} |"
            )
        lines.append("")
    for s in servers:
        lines.extend(failure_lines(s, results[s]))
        load = results[s].get("load") or {}
        if load.get("connect_errors"):
            lines.append(f"- {s}: load clients failed to connect/join: {load['connect_errors']}")
        for st in load.get("steps") or []:
            if st.get("ack_error_samples"):
                lines.append(
                    f"- {s} @ {st['offered_delivered_per_s']:.0f}/s: refused edits: "
                    f"{st['ack_error_samples']}"
                )
            ins = st.get("pg_inserts")
            if ins and inserts_behind(st):
                db_done = persisted_db_us(st)
                lines.append(
                    f"- {s} @ {st['offered_delivered_per_s']:.0f}/s: its fire-and-forget INSERTs "
                    f"fell behind ({ins['in_flight_start']} -> {ins['in_flight_end']} in flight): "
                    "part of their database CPU lands after the window"
                    + (
                        f"; counted per INSERT done in the window "
                        f"({ins['completed_in_window']:,} of {ins['edits_sent_in_window']:,}): "
                        f"{db_done:.1f} us database CPU per delivered"
                        if db_done
                        else ""
                    )
                )
            if st.get("warning"):
                lines.append(
                    f"- {s} @ {st['offered_delivered_per_s']:.0f}/s: {st['warning']} "
                    f"({st['gen_cpu_util']:.0%})"
                )
    lines.extend(closing_lines(doc))
    return "\n".join(lines)
