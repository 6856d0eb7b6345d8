"""What a load test does, decided once in the coordinator: the plan and who is who.

Client ``i`` (0 ≤ i < clients) is user ``<user_prefix>-<i>`` in room
``i // room_size`` (document ``<doc_prefix>-<room>``), talks to
``urls[i % len(urls)]`` (round-robin, so the members of one room sit on
different instances and their edits cross the broker), and belongs to the
worker process whose contiguous block of indices holds ``i``.  It is an
editor when ``floor((i+1)·editors) > floor(i·editors)``: exactly
``floor(clients·editors)`` editors, spread evenly over the rooms.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cowrite.errors import ConfigError

#: Sockets one worker may hold: below the 20,000 open-file limit with room
#: for the interpreter's own files, and below the ~28,000 ephemeral ports of
#: one source address.
MAX_CLIENTS_PER_WORKER = 16_000


@dataclass(frozen=True, slots=True)
class Target:
    """One server instance: where to connect and the request target of the upgrade."""

    url: str
    host: str
    port: int
    request_target: str  # /socket.io/?EIO=4&transport=websocket

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def parse_target(url: str) -> Target:
    """``http://host:port[/path/]`` (or ws://) → the WebSocket transport's target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise ConfigError(f"--url {url!r}: expected http://HOST:PORT[/PATH/] (no TLS)")
    path = parts.path if parts.path not in ("", "/") else "/socket.io/"
    if not path.endswith("/"):
        path += "/"
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return Target(url, host, parts.port or 80, f"{path}?EIO=4&transport=websocket")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Every option of one run (frozen; pickled to the workers)."""

    urls: tuple[str, ...]
    clients: int
    room_size: int = 5
    editors: float = 0.1
    rate: float = 100.0  # edit operations per second, all editors together
    duration: float = 10.0
    workers: int = 1
    connect_rate: float = 2000.0  # new connections per second, all workers together
    connect_concurrency: int = 256  # handshakes in flight per worker
    connect_timeout: float = 30.0
    op_bytes: int = 64
    secret: str | None = field(default=None, repr=False)  # None: tokens from a file
    audience: str | None = None
    issuer: str | None = None
    token_ttl: float = 6 * 3600.0
    run_id: str = "run"
    doc_prefix: str = ""
    user_prefix: str = ""
    source_base: str | None = "127.0.0.2"
    backoff_base: float = 0.25
    backoff_max: float = 5.0
    reconnect_timeout: float = 60.0
    max_attempts: int = 30
    # nginx's passive health check in deploy/nginx.conf (max_fails=1
    # fail_timeout=5s): an instance that refused a connection or answered 503
    # is skipped by every client of the worker for this long (0: never).
    fail_timeout: float = 5.0
    drain: float = 2.0
    settle: float = 0.0  # seconds between the connect phase and the edit phase
    send_buffer_limit: int = 256 * 1024

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("at least one --url is needed")
        for url in self.urls:
            parse_target(url)
        if self.clients < 1 or self.room_size < 1:
            raise ConfigError("--clients and --room-size must be at least 1")
        if not 0.0 <= self.editors <= 1.0:
            raise ConfigError("--editors is a share between 0 and 1")
        if self.rate < 0 or self.duration <= 0 or self.connect_rate <= 0:
            raise ConfigError("--rate must be >= 0, --duration and --connect-rate > 0")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if math.ceil(self.clients / self.workers) > MAX_CLIENTS_PER_WORKER:
            need = math.ceil(self.clients / MAX_CLIENTS_PER_WORKER)
            raise ConfigError(
                f"{self.clients} clients need at least {need} workers "
                f"(at most {MAX_CLIENTS_PER_WORKER} sockets per worker)"
            )
        if self.fail_timeout < 0:
            raise ConfigError("--fail-timeout must be >= 0")
        if self.op_bytes < 0 or self.op_bytes > 60_000:
            raise ConfigError("--op-bytes must be between 0 and 60000")
        if self.source_base is not None:
            try:
                ipaddress.IPv4Address(self.source_base)
            except ValueError as exc:
                raise ConfigError(f"--source-base: {exc}") from exc

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(parse_target(u) for u in self.urls)

    @property
    def rooms(self) -> int:
        return math.ceil(self.clients / self.room_size)

    @property
    def editor_count(self) -> int:
        return editors_in(self, 0, self.clients)

    def doc_id(self, index: int) -> str:
        return f"{self.doc_prefix or 'lt-' + self.run_id}-{index // self.room_size}"

    def user_id(self, index: int) -> str:
        return f"{self.user_prefix or 'lt-' + self.run_id}-u{index}"

    def room_members(self, index: int) -> int:
        """How many clients share client ``index``'s room."""
        first = (index // self.room_size) * self.room_size
        return min(self.room_size, self.clients - first)

    def is_editor(self, index: int) -> bool:
        f = self.editors
        return math.floor((index + 1) * f) > math.floor(index * f)

    def url_index(self, index: int, attempt: int = 0) -> int:
        """The URL that client ``index`` tries at connection attempt ``attempt``.

        Its own instance first, then each of the others once, in an order
        that depends on the client, and so round again.  This is what nginx's
        ``ip_hash`` does when a client's instance fails (it rehashes the
        client onto another one): the failed instance's clients spread evenly
        over the survivors instead of all landing on the next instance.
        """
        n = len(self.urls)
        home = index % n
        step = attempt % n
        if step == 0:
            return home
        return (home + 1 + (index // n + step - 1) % (n - 1)) % n


def editors_in(plan: Plan, start: int, stop: int) -> int:
    f = plan.editors
    return math.floor(stop * f) - math.floor(start * f)


def worker_ranges(clients: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous, balanced blocks of client indices, one per worker."""
    bounds = [clients * w // workers for w in range(workers + 1)]
    return [(bounds[w], bounds[w + 1]) for w in range(workers)]


def default_workers(clients: int) -> int:
    """One worker per 15,000 clients (at least one)."""
    return max(1, math.ceil(clients / 15_000))


def source_address(plan: Plan, worker: int) -> str | None:
    """The worker's own loopback source address (127.0.0.2, .3, ...), or None
    (let the kernel choose) when a target is not on loopback."""
    if plan.source_base is None or not all(t.loopback for t in plan.targets):
        return None
    return str(ipaddress.IPv4Address(plan.source_base) + worker)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPlan:
    plan: Plan
    worker: int
    start: int
    stop: int
    source: str | None
    rate: float  # this worker's share of the edit rate
    connect_rate: float
    tokens: tuple[str, ...] = field(default=(), repr=False)  # tokens[i - start]


def worker_plans(plan: Plan, tokens: tuple[str, ...] = ()) -> list[WorkerPlan]:
    """One plan per worker; ``tokens`` (from --token-file) are cut into slices."""
    if plan.secret is None and len(tokens) < plan.clients:
        raise ConfigError(f"--token-file has {len(tokens)} tokens for {plan.clients} clients")
    total_editors = plan.editor_count
    plans = []
    for w, (start, stop) in enumerate(worker_ranges(plan.clients, plan.workers)):
        share = editors_in(plan, start, stop) / total_editors if total_editors else 0.0
        plans.append(
            WorkerPlan(
                plan=plan,
                worker=w,
                start=start,
                stop=stop,
                source=source_address(plan, w),
                rate=plan.rate * share,
                connect_rate=plan.connect_rate * (stop - start) / plan.clients,
                tokens=tokens[start:stop] if plan.secret is None else (),
            )
        )
    return plans
