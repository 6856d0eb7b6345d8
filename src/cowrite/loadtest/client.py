"""One load-test client: Socket.IO v5 over Engine.IO v4 over a raw WebSocket.

Its connection is the package's one client WebSocket
(``cowrite.client.transport``, on websockets' sans-I/O client) speaking the
sans-I/O Socket.IO client (``cowrite.protocol.client``), as the SDK does.  It is built
to be cheap enough to run ~16,000 of them in one process: one
``asyncio.Protocol`` per TCP connection, no task while connected, no stream
machinery, and one ``orjson.loads`` per received ``remote-edit``.

A :class:`Client` is one user in one document for the whole run; each TCP
connection it opens is a :class:`SioWebSocket`.  The life of a connection::

    TCP connect → HTTP upgrade (101) → Engine.IO OPEN → Socket.IO CONNECT
    (auth: the JWT) → join-document (ack id 0) → joined: edits and remote-edits

When a joined connection is lost and the run is still on, the client
reconnects by itself: jittered exponential backoff (the first delay is the
server's ``server-draining`` hint when one came, else uniform in
``[0, backoff_base]``; then ``min(backoff_max, backoff_base·2^k)·U(0.5, 1.5)``,
at least a refusal's ``Retry-After``), its own instance first and then each
other one in a per-client order (fail-over, ``Plan.url_index``; a failed TCP
connection (nothing listening, reset before the upgrade was answered) or an
HTTP 503 moves to the next one at once,
as nginx's ``proxy_next_upstream error http_503`` does behind the load
balancer, and the worker's other clients skip that instance for
``Plan.fail_timeout`` seconds, as nginx's ``max_fails=1 fail_timeout``
does), rejoining with ``since`` =
the last sequence number it saw (the server sends the missed operations in the
join ack).  The reconnection time is measured from the moment the connection
was lost to the rejoin acknowledgement.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import random
import socket
import time
from collections import Counter
from typing import Any, assert_never

import orjson

from cowrite.client.transport import WebSocketClient, WebSocketURI, parse_uri
from cowrite.errors import ProtocolError
from cowrite.loadtest.hist import Histogram
from cowrite.loadtest.plan import Plan, Target
from cowrite.protocol.client import (
    AckArrived,
    ClientProtocol,
    Closed,
    Connected,
    EventArrived,
    Opened,
    Refused,
)

_REMOTE_EDIT = b'42["remote-edit",'
_EIO_PING = b"2"
_EIO_CLOSE = b"1"
#: The Socket.IO client's heartbeat deadline is not used here (the run has its own).
_NO_DEADLINE = float("inf")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
_JOIN_ACK = 0


class ConnectFailed(Exception):
    """A connection attempt did not end joined; ``reason`` is a short label."""

    def __init__(
        self, reason: str, retry_after: float | None = None, *, elsewhere: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        # Another instance may take it now: the TCP connection failed or
        # dropped before the upgrade was answered (the instance is gone or
        # closing its listener) or HTTP 503 (draining, or full), what nginx's
        # ``proxy_next_upstream error http_503`` moves on for.
        self.elsewhere = elsewhere


class Stats:
    """The counters and histograms of one worker (all its clients)."""

    __slots__ = (
        "ack_errors",
        "ack_latency",
        "acked",
        "attempted",
        "bad",
        "caught_up",
        "connect_failed",
        "connect_time",
        "connected",
        "connected_per_target",
        "delivered",
        "disconnects",
        "drain_notices",
        "drops",
        "errors",
        "events",
        "expected",
        "latency",
        "pings",
        "reconnect_errors",
        "reconnect_failed",
        "reconnect_retries",
        "reconnect_time",
        "reconnecting",
        "rejoined",
        "sent",
        "skipped",
        "unfinished",
    )

    def __init__(self, targets: int) -> None:
        self.attempted = 0
        self.connect_failed = 0
        self.connected = 0  # gauge: joined right now
        self.connected_per_target = [0] * targets
        self.errors: Counter[str] = Counter()  # initial connection failures by reason
        self.connect_time = Histogram()
        self.sent = 0
        self.skipped = 0
        self.acked = 0
        self.ack_errors: Counter[str] = Counter()
        self.ack_latency = Histogram()
        self.delivered = 0
        self.expected = 0  # deliveries the acked operations should cause
        self.latency = Histogram()
        self.caught_up = 0
        self.bad = 0
        self.pings = 0
        self.events: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.disconnects = 0
        self.drain_notices = 0
        self.reconnecting = 0  # gauge
        self.rejoined = 0
        self.reconnect_failed = 0
        self.reconnect_errors: Counter[str] = Counter()  # unexpected exceptions
        self.reconnect_retries = 0
        self.reconnect_time = Histogram()
        # Clients still reconnecting when the run ended, by what their attempt
        # was waiting for and on which instance (Worker fills it at the end).
        self.unfinished: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        """Every counter; histograms in their wire form."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Histogram):
                out[name] = value.to_wire()
            elif isinstance(value, Counter):
                out[name] = dict(value)
            elif isinstance(value, list):
                out[name] = list(value)
            else:
                out[name] = value
        return out


class Context:
    """What every client of a worker shares."""

    __slots__ = (
        "counting",
        "down_until",
        "pad",
        "plan",
        "reconnect",
        "rng",
        "source",
        "stats",
        "stopping",
        "targets",
        "tasks",
    )

    def __init__(self, plan: Plan, source: str | None) -> None:
        self.plan = plan
        self.targets = plan.targets
        self.source = source
        self.stats = Stats(len(self.targets))
        self.pad = "x" * plan.op_bytes
        self.rng = random.Random()
        self.counting = False  # deliveries count only inside the measured window
        self.reconnect = False  # reconnect lost clients (after the connect phase)
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()
        # Per target: until when (time.monotonic) the balancer skips it.
        self.down_until = [0.0] * len(self.targets)

    def target_for(self, index: int, attempt: int) -> int:
        """The instance client ``index`` tries at ``attempt``: the plan's
        order, skipping instances that failed within ``fail_timeout`` (nginx
        rehashes past a peer it marked failed; when every one is marked, it
        tries the usual one)."""
        plan = self.plan
        now = time.monotonic()
        for step in range(attempt, attempt + len(self.targets)):
            target = plan.url_index(index, step)
            if self.down_until[target] <= now:
                return target
        return plan.url_index(index, attempt)

    def failed(self, target: int, failure: ConnectFailed) -> None:
        """An attempt at ``target`` failed: a failure another instance may not
        have (``elsewhere``: refused, reset before the upgrade was answered,
        HTTP 503) marks it failed, as nginx's max_fails=1 counts what
        ``proxy_next_upstream error http_503`` moves on for; a timeout of ours
        does not say the instance is gone."""
        if failure.elsewhere and self.plan.fail_timeout > 0:
            self.down_until[target] = time.monotonic() + self.plan.fail_timeout

    def retry_delay(self, attempt: int, failure: ConnectFailed) -> float:
        """Seconds before attempt ``attempt`` (1-based) after ``failure``.

        A failure that another instance may not have (``elsewhere``: the TCP
        connection failed or dropped before the upgrade was answered, or HTTP
        503) sends the client to the next instance at once,
        as nginx's ``proxy_next_upstream error http_503`` does behind the load
        balancer; once every instance was tried, the backoff applies.
        """
        if failure.elsewhere and attempt % len(self.targets):
            return 0.0
        return self.backoff(attempt, failure.retry_after)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        plan = self.plan
        cap = min(plan.backoff_max, plan.backoff_base * 2.0 ** min(attempt, 30))
        delay: float = cap * self.rng.uniform(0.5, 1.5)
        if retry_after is not None:
            delay = max(delay, retry_after * self.rng.uniform(1.0, 1.5))
        return delay


@functools.cache
def _numeric(host: str, port: int) -> tuple[str, int]:
    """``host``'s IPv4 address, looked up once per target (not per connection)."""
    address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    return str(address[0]), int(address[1])


async def _connect_from(
    loop: asyncio.AbstractEventLoop, source: str, host: str, port: int
) -> socket.socket:
    """A TCP connection from ``source`` (any free port), connected; the
    socket is closed here if anything fails or the wait is cancelled.

    ``IP_BIND_ADDRESS_NO_PORT`` lets the kernel pick the port at ``connect``
    by the whole 4-tuple: a plain ``bind`` to port 0 searched the address's
    ephemeral ports for one no other socket holds, which cost more with
    every connection the worker had (py-spy, 7,500 clients per address: a
    quarter of a worker's CPU while its clients reconnected).  The connect
    itself is a non-blocking ``connect`` and a wait for writability, not
    ``loop.sock_connect``: uvloop's resolves the address (``getaddrinfo``,
    IDNA encoding included) on every call, ~30 us more per connection
    (micro-benchmark) and the largest part of a worker's samples while
    5,000 of its clients reconnected (py-spy)."""
    address = _numeric(host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            await _writable(loop, sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, errno.errorcode.get(err, "connect failed"))
    except BaseException:
        sock.close()
        raise
    return sock


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` is writable (a non-blocking connect has ended); the
    loop stops watching it before this returns or raises."""
    ready: asyncio.Future[None] = loop.create_future()

    def writable() -> None:
        loop.remove_writer(fd)
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


class Client:
    """One user in one document, for the whole run (across reconnections)."""

    __slots__ = (
        "attempt",
        "conn",
        "ctx",
        "doc_id",
        "drain_delay",
        "editor",
        "index",
        "last_seq",
        "lost_at",
        "members",
        "op_no",
        "reconnecting",
        "token",
    )

    def __init__(
        self, ctx: Context, index: int, token: str, *, doc_id: str, editor: bool, members: int
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.token = token
        self.doc_id = doc_id
        self.editor = editor
        self.members = members
        self.conn: SioWebSocket | None = None
        self.attempt: SioWebSocket | None = None  # the connection being opened
        self.last_seq = 0
        self.op_no = 0
        self.lost_at = 0.0
        self.drain_delay: float | None = None
        self.reconnecting = False

    # -- connecting ----------------------------------------------------------

    async def open(self, target_index: int, timeout: float) -> None:
        """Connect, authenticate and join; raises ``ConnectFailed``."""
        ctx = self.ctx
        target = ctx.targets[target_index]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        proto = SioWebSocket(self, target, target_index, done)
        self.attempt = proto
        deadline = loop.time() + timeout
        try:
            if ctx.source is None:
                async with asyncio.timeout_at(deadline):
                    await loop.create_connection(lambda: proto, target.host, target.port)
            else:
                async with asyncio.timeout_at(deadline):
                    sock = await _connect_from(loop, ctx.source, target.host, target.port)
                # Outside the timeout: wrapping a connected socket does no I/O
                # and is never cancelled half-way.  (A socket handed to uvloop
                # before it is connected, create_connection(sock=...), is closed
                # by uvloop when that call fails, a reset or the timeout, while
                # the object keeps the number: seen here as EBADF and "File
                # descriptor N is used by transport" when a draining instance
                # reset connections it had not accepted.)
                await loop.connect_accepted_socket(lambda: proto, sock)
            async with asyncio.timeout_at(deadline):
                await done
        except TimeoutError:
            proto.abandon()
            raise ConnectFailed(f"timeout ({proto.stage})") from None
        except OSError as exc:
            proto.abandon()
            name = errno.errorcode.get(exc.errno or 0) or type(exc).__name__
            # Refused, reset, unreachable: nginx's "error" (next upstream).
            raise ConnectFailed(name, elsewhere=True) from None
        except ConnectFailed:
            proto.abandon()
            raise
        finally:
            self.attempt = None

    def unfinished_stage(self) -> str | None:
        """For a client still reconnecting: where it is (the stage of the
        attempt under way, with its instance, or waiting for the next one)."""
        if not self.reconnecting:
            return None
        attempt = self.attempt
        if attempt is None:
            return "between attempts"
        return f"{attempt.stage} at instance {attempt.target_index}"

    def joined(self, conn: SioWebSocket) -> None:
        self.conn = conn
        stats = self.ctx.stats
        stats.connected += 1
        stats.connected_per_target[conn.target_index] += 1

    def lost(self, conn: SioWebSocket, reason: str) -> None:
        """A joined connection ended."""
        if self.conn is not conn:
            return
        self.conn = None
        ctx = self.ctx
        stats = ctx.stats
        stats.connected -= 1
        stats.connected_per_target[conn.target_index] -= 1
        stats.drops[reason] += 1
        if ctx.stopping or not ctx.reconnect:
            return
        stats.disconnects += 1
        self.lost_at = time.monotonic()
        if not self.reconnecting:
            self.reconnecting = True
            stats.reconnecting += 1
            task = asyncio.get_running_loop().create_task(self._reconnect())
            ctx.tasks.add(task)
            task.add_done_callback(ctx.tasks.discard)

    async def _reconnect(self) -> None:
        ctx = self.ctx
        plan = ctx.plan
        stats = ctx.stats
        try:
            attempt = 0
            delay = self._first_delay()
            while attempt < plan.max_attempts and not ctx.stopping:
                await asyncio.sleep(delay)
                remaining = self.lost_at + plan.reconnect_timeout - time.monotonic()
                if ctx.stopping or remaining <= 0:
                    break
                target = ctx.target_for(self.index, attempt)
                try:
                    await self.open(target, min(plan.connect_timeout, remaining))
                except ConnectFailed as exc:
                    ctx.failed(target, exc)
                    attempt += 1
                    stats.reconnect_retries += 1
                    delay = ctx.retry_delay(attempt, exc)
                    continue
                stats.rejoined += 1
                stats.reconnect_time.record(int((time.monotonic() - self.lost_at) * 1e6))
                if self.conn is not None:
                    return
                # Lost again right after rejoining: a new outage (lost() set lost_at).
                attempt = 0
                delay = self._first_delay()
            if not ctx.stopping:
                stats.reconnect_failed += 1
        except Exception as exc:
            # A bug, not an outcome: counted and named in the report rather
            # than lost with the task.
            stats.reconnect_failed += 1
            stats.reconnect_errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
        finally:
            self.reconnecting = False
            stats.reconnecting -= 1

    def _first_delay(self) -> float:
        delay: float | None = self.drain_delay
        self.drain_delay = None
        if delay is not None:
            return delay
        return self.ctx.rng.uniform(0.0, self.ctx.plan.backoff_base)

    # -- editing -------------------------------------------------------------

    def send_edit(self) -> bool:
        """Emit one ``edit-operation`` carrying its send time; False if not possible now."""
        conn = self.conn
        if conn is None or conn.transport is None:
            return False
        if conn.transport.get_write_buffer_size() > self.ctx.plan.send_buffer_limit:
            return False
        self.op_no += 1
        now = time.time_ns()
        operation = {"t": now, "p": self.ctx.pad}
        body = {"documentId": self.doc_id, "operation": operation, "clientOpId": str(self.op_no)}
        ack_id = conn.proto.emit("edit-operation", body, ack=True)
        assert ack_id is not None
        conn.acks[ack_id] = now
        conn.flush()
        self.ctx.stats.sent += 1
        return True


class SioWebSocket(WebSocketClient):
    """One TCP connection of a :class:`Client`: the shared client WebSocket
    (``cowrite.client.transport``) speaking the sans-I/O Engine.IO/Socket.IO
    client (``cowrite.protocol.client``), except for ``remote-edit``: its
    frames are recognised by their first bytes and read with one
    ``orjson.loads`` (the hot path, as the server's ``fast_event``)."""

    __slots__ = (
        "acks",
        "client",
        "closed",
        "done",
        "proto",
        "stage",
        "target",
        "target_index",
    )

    def __init__(
        self, client: Client, target: Target, target_index: int, done: asyncio.Future[None]
    ) -> None:
        super().__init__(_ws_uri(target), max_size=MAX_MESSAGE_BYTES)
        self.client = client
        self.target = target
        self.target_index = target_index
        self.done = done
        self.proto = ClientProtocol(
            0.0, handshake_timeout=_NO_DEADLINE, auth={"token": client.token}
        )
        self.acks: dict[int, int] = {}  # ack id -> send time (ns) of an edit
        self.stage = "tcp"
        self.closed = False

    # -- WebSocketClient hooks -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stage = "upgrade"
        super().connection_made(transport)

    def ws_opened(self) -> None:
        self.stage = "engine.io open"

    def ws_message(self, payload: bytes, text: bool) -> None:
        if text and payload.startswith(_REMOTE_EDIT):
            self._remote_edit(payload, time.time_ns())
        else:
            self._packet(payload, text)

    def ws_closed(self, reason: str, retry_after: float | None) -> None:
        # HTTP 503 (draining, or full), or the connection dropped before the
        # upgrade was answered (a draining instance's listener closing with
        # it in the backlog): another instance may take it now, as nginx's
        # proxy_next_upstream error http_503 moves on for both.
        dropped = self.stage == "upgrade" and reason == "transport close"
        self._lost(reason, retry_after, elsewhere=self.refused_status == 503 or dropped)

    # -- sending -------------------------------------------------------------

    def flush(self) -> None:
        """Write what the Socket.IO client has queued."""
        self.send_packets(self.proto.data_to_send())

    # -- ending --------------------------------------------------------------

    def abandon(self) -> None:
        """Drop this connection without reporting it (a failed attempt)."""
        self.closed = True
        self.abort()

    def close(self, code: int = 1000) -> None:
        """End the run's connection politely (Socket.IO and Engine.IO close
        packets, then the WebSocket close frame)."""
        if self.transport is not None and not self.closed and not self.ws_ended:
            self.proto.disconnect()
            self.flush()
            self.send_text(_EIO_CLOSE)
        super().close(code)  # connection_lost reports it

    def _lost(self, reason: str, retry_after: float | None = None, elsewhere: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.done.done():
            self.done.set_exception(ConnectFailed(reason, retry_after, elsewhere=elsewhere))
        elif self.client.conn is self:
            self.client.lost(self, reason)

    # -- receiving -----------------------------------------------------------

    def _remote_edit(self, payload: bytes, now: int) -> None:
        ctx = self.client.ctx
        try:
            body = orjson.loads(payload[2:])[1]
            sent = body["operation"]["t"]
            seq = body["seq"]
        except (orjson.JSONDecodeError, LookupError, TypeError):
            ctx.stats.bad += 1
            return
        client = self.client
        if isinstance(seq, int) and seq > client.last_seq:
            client.last_seq = seq
        if ctx.counting and isinstance(sent, int):
            stats = ctx.stats
            stats.delivered += 1
            stats.latency.record((now - sent) // 1000)

    def _packet(self, payload: bytes, text: bool) -> None:
        stats = self.client.ctx.stats
        try:
            event = self.proto.receive(payload.decode() if text else payload, time.monotonic())
        except (ProtocolError, ValueError, LookupError, TypeError) as exc:
            # orjson's and UTF-8's errors are ValueErrors.
            stats.bad += 1
            self.fail(f"bad packet: {type(exc).__name__}")
            return
        if payload == _EIO_PING:
            stats.pings += 1
        self.flush()  # a PONG, the CONNECT with the token
        if event is None:
            return
        if isinstance(event, AckArrived):
            self._ack(event.ack_id, event.args[0] if event.args else None)
        elif isinstance(event, EventArrived):
            self._event(event.event, event.args)
        elif isinstance(event, Opened):
            self.stage = "socket.io connect"
        elif isinstance(event, Connected):
            self.stage = "join"
            client = self.client
            join = {"documentId": client.doc_id, "since": client.last_seq}
            ack_id = self.proto.emit("join-document", join, ack=True)
            assert ack_id == _JOIN_ACK
            self.flush()
        elif isinstance(event, Refused):
            code = event.data.get("code") if isinstance(event.data, dict) else None
            self.fail(f"connect_error: {code or event.message}")
        elif isinstance(event, Closed):
            self.fail("engine.io close" if event.reason == "transport close" else event.reason)
        else:
            assert_never(event)

    def _ack(self, ack_id: int, result: Any) -> None:
        client = self.client
        stats = client.ctx.stats
        ok = isinstance(result, dict) and result.get("ok") is True
        if ack_id == _JOIN_ACK:
            if not ok:
                code = result.get("error", {}).get("code") if isinstance(result, dict) else None
                self.fail(f"join: {code}")
                return
            ops = result.get("ops") or []
            stats.caught_up += len(ops)
            last = result.get("head", 0) if not result.get("more") else ops[-1]["seq"]
            if isinstance(last, int) and last > client.last_seq:
                client.last_seq = last
            self.stage = "joined"
            if not self.done.done():
                client.joined(self)
                self.done.set_result(None)
            return
        sent = self.acks.pop(ack_id, None)
        if sent is None:
            stats.bad += 1
            return
        if not ok:
            code = result.get("error", {}).get("code") if isinstance(result, dict) else None
            stats.ack_errors[str(code)] += 1
            return
        stats.acked += 1
        if client.ctx.counting:
            stats.ack_latency.record((time.time_ns() - sent) // 1000)
        stats.expected += client.members - 1
        seq = result.get("seq")
        if isinstance(seq, int) and seq > client.last_seq:
            client.last_seq = seq

    def _event(self, name: str, args: list[Any]) -> None:
        stats = self.client.ctx.stats
        stats.events[name] += 1
        if name == "server-draining":
            stats.drain_notices += 1
            notice = args[0] if args and isinstance(args[0], dict) else {}
            delay = notice.get("reconnectDelayMs")
            if isinstance(delay, int | float) and 0 <= delay <= 60_000:
                self.client.drain_delay = delay / 1000


@functools.cache
def _ws_uri(target: Target) -> WebSocketURI:
    return parse_uri(f"ws://{target.host}:{target.port}{target.request_target}")
