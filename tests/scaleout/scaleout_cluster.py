"""The cluster of the scale-out tests: N ``cowrite serve`` processes over one
PostgreSQL schema and one Redis prefix, and a real nginx in front of them
rendered from ``deploy/nginx.conf``.

A session's requests reach the instance named in its sid (cowrite's sids
start with ``<instance-id>.``; ``deploy/nginx.conf`` maps ``$arg_sid``);
handshakes go by nginx's ``ip_hash``, which keys on the first three octets of
an IPv4 client address, so editors bound to 127.0.X.Y with different X land on
different instances.
Which X goes where is not guessed: ``Cluster.probe_routes`` sends one
``/healthz`` through nginx from each candidate address and reads the instance
that answered from nginx's access log.

Every wait is bounded.  The scale-out tests need nginx, PostgreSQL, Redis and
Node.js; without one they skip, except under ``CI`` where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import resource
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
JS_DIR = ROOT / "tests" / "js"
NGINX = os.environ.get("COWRITE_TEST_NGINX", "/usr/sbin/nginx")
PG_DSN = os.environ.get("COWRITE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("COWRITE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "scaleout-test-secret-" + "s" * 32
#: Bound, in seconds, of one ordinary wait.
WAIT = 10.0


# -- what the suite needs ----------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip, or fail under CI: a missing service must not pass CI silently."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


async def require_services() -> None:
    if not os.access(NGINX, os.X_OK):
        unavailable(f"nginx is not installed at {NGINX} (apt-get install nginx)")
    if shutil.which("node") is None:
        unavailable("node is not installed (scripts/ensure-system-deps.sh)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        unavailable("tests/js/node_modules is missing: run `make node-deps`")
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5.0)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        unavailable(f"PostgreSQL at {PG_DSN} is unreachable: {type(exc).__name__}: {exc}")
    client = aioredis.from_url(REDIS_URL, socket_timeout=5.0)
    try:
        await client.ping()
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        unavailable(f"Redis at {REDIS_URL} is unreachable: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(user_id: str, document_id: str, role: str = "editor", ttl: float = 600) -> str:
    """A token granting ``role`` on ``document_id`` through the ``docs`` claim
    (the instances run with ``COWRITE_AUTH_DOCS_CLAIM=true``)."""
    from cowrite.auth import AuthSettings, mint_token

    return mint_token(
        AuthSettings(secret=SECRET, docs_claim=True),
        user_id=user_id,
        name=user_id,
        ttl=ttl,
        docs={document_id: role},
    )


# -- nginx: deploy/nginx.conf with test ports and paths -----------------------------


def _sub(pattern: str, repl: str, text: str, expected: int = 1) -> str:
    out, n = re.subn(pattern, lambda _m: repl, text, flags=re.MULTILINE)
    if n != expected:
        raise AssertionError(
            f"deploy/nginx.conf changed shape: {pattern!r} matched {n} time(s), "
            f"expected {expected} (update tests/scaleout/scaleout_support.py)"
        )
    return out


def render_nginx_conf(
    source: str, *, prefix: Path, listen_port: int, upstream_ports: list[int], workers: int = 4
) -> str:
    """``deploy/nginx.conf`` for a test: same proxy directives, test ports, every
    path under ``prefix``, in the foreground, as the current user, ``workers``
    worker processes.  Upstream ``n`` (from 1) is instance ``i<n>``: its line in
    the pool, its line in the ``$arg_sid`` map and its own upstream block."""
    conf = source
    conf = _sub(r"^user\s+[^;]+;", f"user {getpass.getuser()};", conf)
    conf = _sub(r"^pid\s+[^;]+;", f"pid {prefix}/nginx.pid;\ndaemon off;", conf)
    conf = _sub(r"^error_log\s+[^;]+;", f"error_log {prefix}/error.log info;", conf)
    conf = _sub(r"^worker_processes\s+[^;]+;", f"worker_processes {workers};", conf)
    # Not above this process's hard limit (nginx would log an alert).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = int(re.search(r"^worker_rlimit_nofile\s+(\d+);", conf, re.MULTILINE)[1])  # type: ignore[index]
    if hard != resource.RLIM_INFINITY and wanted > hard:
        conf = _sub(r"^worker_rlimit_nofile\s+\d+;", f"worker_rlimit_nofile {hard};", conf)
    conf = _sub(
        r"^(\s*)access_log\s+\S+\s+cowrite;",
        f"    access_log {prefix}/access.log cowrite;\n"
        f"    client_body_temp_path {prefix}/client_body;\n"
        f"    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n"
        f"    uwsgi_temp_path {prefix}/uwsgi;\n"
        f"    scgi_temp_path {prefix}/scgi;",
        conf,
    )
    conf = _sub(r"^(\s*)listen\s+80;", f"        listen 127.0.0.1:{listen_port};", conf)
    ids = [f"i{n}" for n in range(1, len(upstream_ports) + 1)]
    # The pool: one server line per instance, with the options of the first.
    servers = re.findall(r"^\s*server\s+127\.0\.0\.1:\d+(\s[^;]*)?;", conf, flags=re.MULTILINE)
    if not servers:
        raise AssertionError("deploy/nginx.conf: no upstream server lines found")
    options = servers[0]
    lines = "\n".join(f"        server 127.0.0.1:{p}{options};" for p in upstream_ports)
    conf = _sub(
        r"^\s*server\s+127\.0\.0\.1:\d+[^;]*;\n(?:\s*server\s+127\.0\.0\.1:\d+[^;]*;\n)*",
        lines + "\n",
        conf,
    )
    # The map from a sid's instance prefix to that instance's own upstream.
    entry = re.search(r'^(\s*)"~\^(i1)\\\.([^"]*)"(\s+)cowrite_i1;$', conf, flags=re.MULTILINE)
    if entry is None:
        raise AssertionError("deploy/nginx.conf: no $arg_sid map line for i1")
    indent, _, rest, gap = entry.groups()
    lines = "\n".join(f'{indent}"~^{i}\\.{rest}"{gap}cowrite_{i};' for i in ids)
    conf = _sub(
        r'^\s*"~\^i\d+\\\.[^"]*"\s+cowrite_i\d+;\n(?:\s*"~\^i\d+\\\.[^"]*"\s+cowrite_i\d+;\n)*',
        lines + "\n",
        conf,
    )
    # Each instance's own upstream (one line each).
    lines = "\n".join(
        f"    upstream cowrite_{i} {{ server 127.0.0.1:{p}; }}"
        for i, p in zip(ids, upstream_ports, strict=True)
    )
    conf = _sub(
        r"^\s*upstream cowrite_i\d+ \{ server [^;]+; \}\n(?:\s*upstream cowrite_i\d+ \{ server [^;]+; \}\n)*",
        lines + "\n",
        conf,
    )
    return conf


@dataclass
class Nginx:
    prefix: Path
    port: int
    upstream_ports: list[int]
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    async def start(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                DEPLOY_CONF.read_text(),
                prefix=self.prefix,
                listen_port=self.port,
                upstream_ports=self.upstream_ports,
            )
        )
        out = open(self.prefix / "stderr.log", "wb")  # noqa: SIM115 - closed by the process end
        self.proc = await asyncio.create_subprocess_exec(
            NGINX, "-p", str(self.prefix), "-c", str(conf),
            stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out.close()
        await wait_http(f"{self.url}/healthz", 200, what="nginx", proc=self.proc)
        return self

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets are cut
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def log_lines(self) -> list[dict[str, str]]:
        """The access log, parsed: remote, request, status, upstreams (all tried),
        the Engine.IO sid in the request's query ("" for none), the worker's pid."""
        pattern = re.compile(
            r'^(?P<remote>\S+) \[[^\]]*\] "(?P<request>[^"]*)" (?P<status>\d+) \d+ '
            r"upstream=(?P<upstream>.*?) upstream_status=.* worker=(?P<worker>\d+)$"
        )
        sid = re.compile(r"[?&]sid=([^&\s]+)")
        rows = []
        if not self.access_log.exists():
            return rows
        for line in self.access_log.read_text().splitlines():
            m = pattern.match(line)
            if m:
                row = m.groupdict()
                found = sid.search(row["request"])
                row["sid"] = found.group(1) if found else ""
                rows.append(row)
        return rows


async def wait_http(
    url: str,
    status: int,
    *,
    what: str,
    proc: asyncio.subprocess.Process | None = None,
    timeout: float = 20.0,
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.returncode is not None:
                raise AssertionError(f"{what} exited with {proc.returncode} while starting")
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
                    last = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: {url} did not answer {status} within {timeout} s ({last!r})")


# -- cowrite instances --------------------------------------------------------------


@dataclass
class Instance:
    instance_id: str
    port: int
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connections(self) -> list[tuple[str, str | None]]:
        """(user, client address or None) of every connection this instance
        accepted, from its log (JSON lines, or the older text format)."""
        if not self.log_path.exists():
            return []
        found: list[tuple[str, str | None]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("msg") == "connected" and "user" in record:
                        found.append((record["user"], record.get("address")))
                continue
            m = re.search(r"cowrite\.app connected \S+ as (\S+)", line)
            if m:
                found.append((m.group(1), None))
        return found


@dataclass
class Cluster:
    """``size`` cowrite instances (one PostgreSQL schema, one Redis prefix) behind nginx."""

    workdir: Path
    size: int = 3
    schema: str = field(default_factory=lambda: f"cowrite_scale_{uuid.uuid4().hex[:12]}")
    redis_prefix: str = field(default_factory=lambda: f"cowrite-scale-{uuid.uuid4().hex[:12]}:")
    instances: list[Instance] = field(default_factory=list)
    nginx: Nginx | None = None
    #: More ``cowrite serve`` flags for every instance (``["--recovery"]``).
    serve_args: list[str] = field(default_factory=list)

    @property
    def store(self) -> str:
        sep = "&" if "?" in PG_DSN else "?"
        return f"{PG_DSN}{sep}search_path={self.schema}"

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    def by_port(self, port: int) -> Instance:
        return next(i for i in self.instances if i.port == port)

    def by_id(self, instance_id: str) -> Instance:
        return next(i for i in self.instances if i.instance_id == instance_id)

    async def start(self) -> Cluster:
        admin = await asyncpg.connect(PG_DSN, timeout=5.0)
        try:
            await admin.execute(f'CREATE SCHEMA "{self.schema}"')
        finally:
            await admin.close()
        for n in range(1, self.size + 1):
            inst = Instance(f"i{n}", free_port(), self.workdir / f"i{n}.log")
            await self._spawn(inst)
            self.instances.append(inst)
        await asyncio.gather(
            *(
                wait_http(f"{i.url}/readyz", 200, what=f"cowrite {i.instance_id}", proc=i.proc)
                for i in self.instances
            )
        )
        self.nginx = await Nginx(
            self.workdir / "nginx", free_port(), [i.port for i in self.instances]
        ).start()
        return self

    async def _spawn(self, inst: Instance) -> None:
        env = {
            **os.environ,
            "COWRITE_AUTH_SECRET": SECRET,
            "COWRITE_REDIS_PREFIX": self.redis_prefix,
            "COWRITE_AUTH_DOCS_CLAIM": "true",
            # Production mode wants an allow-list; the test clients send no Origin.
            "COWRITE_CORS_ORIGINS": "https://cowrite.test",
        }
        out = open(inst.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        inst.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cowrite", "serve",
            "--host", "127.0.0.1", "--port", str(inst.port),
            "--store", self.store, "--redis", REDIS_URL,
            "--instance-id", inst.instance_id,
            "--trusted-proxy", "127.0.0.0/8",
            "--data-dir", str(self.workdir / f"data-{inst.instance_id}"),
            "--log-level", "info", *self.serve_args,
            env=env, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out.close()

    async def kill(self, inst: Instance) -> None:
        """SIGKILL: the instance dies with its sessions, saying nothing."""
        assert inst.proc is not None
        inst.proc.kill()
        await asyncio.wait_for(inst.proc.wait(), WAIT)

    async def restart(self, inst: Instance) -> None:
        """Start a stopped instance again (same id and port) and wait until ready."""
        assert inst.proc is not None and inst.proc.returncode is not None
        await self._spawn(inst)
        await wait_http(
            f"{inst.url}/readyz", 200, what=f"cowrite {inst.instance_id}", proc=inst.proc
        )

    async def terminate(self, inst: Instance, timeout: float = 15.0) -> int:
        """SIGTERM: the instance drains and exits; its exit status."""
        assert inst.proc is not None
        inst.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(inst.proc.wait(), timeout)

    async def stop(self) -> None:
        if self.nginx is not None:
            await self.nginx.stop()
        for inst in self.instances:
            if inst.proc is not None and inst.proc.returncode is None:
                inst.proc.send_signal(signal.SIGTERM)
        for inst in self.instances:
            if inst.proc is None:
                continue
            try:
                await asyncio.wait_for(inst.proc.wait(), 15.0)
            except TimeoutError:
                inst.proc.kill()
                await inst.proc.wait()
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(PG_DSN, timeout=5.0)
            try:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await admin.close()
        with contextlib.suppress(Exception):
            client = aioredis.from_url(REDIS_URL, socket_timeout=5.0)
            try:
                keys = [k async for k in client.scan_iter(match=f"{self.redis_prefix}*", count=500)]
                if keys:
                    await client.delete(*keys[:10_000])
            finally:
                await client.aclose()

    async def probe_routes(self, candidates: list[str]) -> dict[str, str]:
        """Source address -> id of the instance nginx sends it to (one request each)."""
        assert self.nginx is not None
        for ip in candidates:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.nginx.port, local_addr=(ip, 0)), WAIT
            )
            writer.write(b"GET /healthz HTTP/1.0\r\nHost: cowrite\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            await writer.wait_closed()
        routes: dict[str, str] = {}
        for row in self.nginx.log_lines():
            if row["request"].startswith("GET /healthz") and row["remote"] in candidates:
                served = row["upstream"].split(",")[-1].strip()
                routes[row["remote"]] = self.by_port(int(served.rsplit(":", 1)[1])).instance_id
        missing = set(candidates) - set(routes)
        assert not missing, f"no access-log line for probes from {sorted(missing)}"
        return routes

    def sessions_by_client(self) -> dict[str, set[str]]:
        """Source address -> instance ids that served its /socket.io/ requests."""
        assert self.nginx is not None
        seen: dict[str, set[str]] = {}
        for row in self.nginx.log_lines():
            if " /socket.io/" not in row["request"] or row["upstream"] in ("-", ""):
                continue
            served = row["upstream"].split(",")[-1].strip()
            if ":" not in served:
                continue
            port = int(served.rsplit(":", 1)[1])
            seen.setdefault(row["remote"], set()).add(self.by_port(port).instance_id)
        return seen


def served_by(cluster: Cluster, row: dict[str, str]) -> list[str]:
    """Ids of the instances an access-log row's request was passed to, in order
    (more than one when nginx tried the next upstream)."""
    out = []
    for addr in row["upstream"].split(","):
        addr = addr.strip()
        if ":" in addr:
            out.append(cluster.by_port(int(addr.rsplit(":", 1)[1])).instance_id)
    return out


async def addresses_by_instance(cluster: Cluster, subnets: int = 24) -> dict[str, list[str]]:
    """instance id -> /24 prefixes "127.0.X" routed to it (probed through nginx)."""
    candidates = [f"127.0.{x}.1" for x in range(subnets)]
    routes = await cluster.probe_routes(candidates)
    out: dict[str, list[str]] = {i.instance_id: [] for i in cluster.instances}
    for ip, inst in routes.items():
        out[inst].append(ip.rsplit(".", 1)[0])
    return out
