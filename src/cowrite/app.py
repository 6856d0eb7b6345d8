"""Wiring: builds the application ``cowrite serve`` runs.  No logic of its own."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowrite.auth import AuthError, TokenVerifier, mint_token
from cowrite.backends.broker import Broker
from cowrite.backends.broker_memory import MemoryBroker
from cowrite.backends.presence import PresenceStore
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.recovery import RecoveryStore
from cowrite.backends.store import OperationStore
from cowrite.config import AppSettings, is_postgres_url
from cowrite.core.acks import error
from cowrite.core.api import ServerApi
from cowrite.core.service import CollabService, refusal
from cowrite.errors import CloseReason, ConfigError, ConnectionRefused
from cowrite.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cowrite.metrics import Metrics
from cowrite.server import SocketServer
from cowrite.server.api import HttpApi
from cowrite.server.connection import Connection, Request
from cowrite.server.socketio import RECOVERABLE_DISCONNECT_REASONS
from cowrite.web import STATIC_DIR, install_web_routes

log = logging.getLogger("cowrite.app")

# Upper bound of the random delay a drained client waits before reconnecting.
DRAIN_JITTER_MS = 500
# Seconds between the drain notice and the close of the sessions (once per
# drain).  0.1 s let 2 of 8 python-socketio WebSocket clients miss the notice
# on a loaded machine (load 5 to 9, three runs in a row of the scale-out drain
# test): their handlers run as background tasks, after the close if it comes
# first.  The clients are told to wait up to DRAIN_JITTER_MS anyway.
DRAIN_NOTICE_PAUSE = 0.5
# Bytes of a server API body besides its operation.
API_BODY_OVERHEAD = 16 * 1024

EVENTS = (
    "join-document",
    "leave-document",
    "edit-operation",
    "sync",
    "presence-update",
    "share-document",
    "store-snapshot",
)


def one_argument(
    handler: Callable[[str, Any], Awaitable[dict[str, Any]]],
) -> Callable[..., Awaitable[dict[str, Any]] | dict[str, Any]]:
    """Every client event takes exactly one payload (plus the ack callback).

    A plain function: it returns the handler's awaitable (a coroutine, run as a
    task, or a future, acknowledged when it resolves) without a coroutine frame
    of its own."""

    def call(sid: str, *args: Any) -> Awaitable[dict[str, Any]] | dict[str, Any]:
        if len(args) != 1:
            return error("invalid_payload", f"expected one argument, got {len(args)}")
        return handler(sid, args[0])

    return call


def open_store(url: str) -> OperationStore:
    """``sqlite:///path``, a bare path, or ``postgresql://...``."""
    if is_postgres_url(url):
        from cowrite.backends.store_postgres import PostgresStore

        return PostgresStore(url)
    from cowrite.backends.store_sqlite import SqliteStore

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise ConfigError("empty SQLite path")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)


@dataclass
class App:
    server: SocketServer
    service: CollabService
    store: OperationStore
    presence: PresenceStore
    api: ServerApi
    http_api: HttpApi | None = None
    recovery: RecoveryStore | None = None
    #: Seconds a drain keeps its users in the shared presence after closing
    #: their sessions (0: none; see ``stop``).
    presence_handover: float = 0.0

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        """Open the store, start presence and the service, then listen.  When
        listening fails (the port is taken: ``OSError`` EADDRINUSE) what was
        started is stopped again before the error propagates."""
        await self.store.open()
        await self.presence.start()
        if self.recovery is not None:
            await self.recovery.start()
        await self.service.start()
        try:
            await self.server.start()
        except BaseException:
            await self.service.stop()
            if self.recovery is not None:
                await self.recovery.stop()
            await self.presence.stop()
            await self.store.close()
            raise

    async def stop(self, grace: float = 3.0) -> None:
        """Graceful drain (SIGTERM):

        1. refuse new sessions, while existing sessions are served: the
           listening socket closes at once when no polling session needs it
           (new connections are refused by the kernel), else new sessions get
           HTTP 503 and /readyz reports not ready until the last polling
           session is gone (step 4); either way a load balancer tries
           another instance;
        2. tell every client, with its own jittered delay, that the instance is
           going (our SDK honours it; the official clients reconnect after
           "transport close" with their own jitter), so a drained instance does
           not cause a reconnect storm on the others;
        3. go on committing and acknowledging edits for DRAIN_NOTICE_PAUSE
           (the clients handle the notice meanwhile), then commit every
           operation already accepted (its ack still goes out) and refuse
           later ones (``unavailable``: the client resends it elsewhere);
        4. close every session gracefully: WebSocket clients get what is queued
           and a close frame, polling clients collect it with their next GET
           followed by a CLOSE packet; wait for that (at most ``grace`` s);
           the listening socket closes as soon as no polling session waits
           for its last GET (new connections are then refused at once);
        5. hand over: with a shared presence (Redis), the drained users stay
           in it for ``presence_handover`` seconds (the heartbeat goes on), so
           that a user who rejoins on another instance meanwhile never leaves
           the roster (no ``user-left`` then ``user-joined`` for every user of
           the instance); then say goodbye in the shared presence, which
           reports who left for good (announced), and stop the broker, the
           listener and the store.
        """
        engine = self.server.engine
        drained = bool(engine.sessions)
        engine.begin_drain()
        rng = random.Random()
        for sid in self.server.socket_ids():
            self.server.send(
                sid,
                "server-draining",
                {"reason": "server draining", "reconnectDelayMs": rng.randint(0, DRAIN_JITTER_MS)},
            )
        # Give client libraries a moment to handle the notice before the close
        # frame arrives (python-socketio runs event handlers as background
        # tasks and may act on the close first: see DRAIN_NOTICE_PAUSE).
        # Edits are still committed and acknowledged meanwhile: refusing them
        # from the notice on made ~30 of 3,748 edits in a drain of 5,000
        # clients come back ``unavailable`` (bench/adr, SIGTERM).
        await asyncio.sleep(DRAIN_NOTICE_PAUSE)
        await self.service.commit_pending()
        # The acks of that last commit are queued in the next loop turns:
        # before the close frames, which follow what is queued.
        for _ in range(3):
            await asyncio.sleep(0)
        self.service.begin_shutdown()
        engine.close_sessions(CloseReason.SERVER_SHUTDOWN)
        if not await engine.wait_sessions_closed(grace, stop_accepting=True):
            log.warning("drain: %d sessions still open after %.1fs", len(engine.sessions), grace)
        await self.server.wait_handlers(1.0)  # the disconnect handlers those closes started
        if drained and self.presence_handover > 0:
            await asyncio.sleep(self.presence_handover)
        try:
            self.service.announce_departures(await self.presence.stop())
        except Exception:
            log.exception("presence goodbye failed")
        await self.service.stop()  # saves the drained sockets' recovery records
        if self.recovery is not None:
            await self.recovery.stop()
        await self.server.stop()
        await self.store.close()
        log.info("stopped: every session closed, store closed", extra={"event": "stopped"})


def build_app(settings: AppSettings, *, store: OperationStore | None = None) -> App:
    server = SocketServer(settings.server)
    the_store = store if store is not None else open_store(settings.store)
    broker: Broker
    presence: PresenceStore
    if settings.redis_url:
        from cowrite.backends.broker_redis import RedisBroker
        from cowrite.backends.presence_redis import RedisPresence

        broker = RedisBroker(
            settings.redis_url,
            instance_id=settings.instance_id,
            channel_prefix=settings.redis_prefix,
        )
        presence = RedisPresence(
            settings.redis_url,
            instance_id=settings.instance_id,
            ttl=settings.presence_ttl,
            prefix=settings.redis_prefix,
        )
    else:
        broker = MemoryBroker(instance_id=settings.instance_id or None)
        presence = MemoryPresence()
    recovery: RecoveryStore | None = None
    if settings.recovery:
        if settings.redis_url:
            from cowrite.backends.recovery_redis import RedisRecovery

            recovery = RedisRecovery(settings.redis_url, prefix=settings.redis_prefix)
        else:
            from cowrite.backends.recovery_memory import MemoryRecovery

            recovery = MemoryRecovery()
    service = CollabService(
        store=the_store,
        presence=presence,
        gateway=server,
        verifier=TokenVerifier(settings.auth),
        broker=broker,
        settings=settings.collab,
        recovery=recovery,
    )
    if recovery is not None:
        server.enable_recovery(service.resume)

    metrics = Metrics(server, service)
    # Every instance answers the others' API messages (disconnect, info),
    # whether or not it serves the HTTP API itself.
    api = ServerApi(service, timeout=settings.api_timeout)

    def connect(sid: str, auth: Any) -> None:
        address = server.client_address(sid)
        try:
            identity = service.connect(sid, auth, pid=server.session_pid(sid))
        except AuthError as exc:
            log.info(
                "connect refused",
                extra={
                    "event": "connect_refused",
                    "sid": sid,
                    "code": exc.code,
                    "address": address,
                },
            )
            message, data = refusal(exc)
            raise ConnectionRefused(message, data) from exc
        except Exception:
            metrics.connect_errors += 1
            raise
        log.info(
            "connected",
            extra={
                "event": "connect",
                "sid": sid,
                "user": identity.user_id,
                "address": address,
                "recovered": server.recovered(sid),
            },
        )

    async def disconnect(sid: str, reason: str) -> None:
        metrics.disconnects[reason] += 1
        log.info("disconnected", extra={"event": "disconnect", "sid": sid, "reason": reason})
        await service.disconnect(sid, recoverable=reason in RECOVERABLE_DISCONNECT_REASONS)

    server.on("connect", connect)
    server.on("disconnect", disconnect)
    server.on("join-document", one_argument(service.join))
    server.on("leave-document", one_argument(service.leave))
    server.on("edit-operation", one_argument(service.edit))
    server.on("sync", one_argument(service.sync))
    server.on("presence-update", one_argument(service.presence_update))
    server.on("share-document", one_argument(service.share))
    server.on("store-snapshot", one_argument(service.store_snapshot))

    def healthz(conn: Connection, req: Request) -> None:
        conn.respond(200, b"ok")

    def readyz(conn: Connection, req: Request) -> None:
        async def check() -> None:
            try:
                ok = not server.engine.draining and await asyncio.wait_for(service.ready(), 2.0)
            except Exception:
                ok = False
            if ok:
                conn.respond(200, b"ready")
            else:
                conn.respond(503, b"not ready", headers=[("Retry-After", "1")])

        task = asyncio.get_running_loop().create_task(check())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def metrics_route(conn: Connection, req: Request) -> None:
        conn.respond(200, metrics.render(), content_type=METRICS_CONTENT_TYPE)

    def dev_mint(user_id: str, name: str) -> str:
        # No docs claim: the stored roles apply to the demo (web.py).
        return mint_token(settings.auth, user_id=user_id, name=name)

    install_web_routes(
        server, dev_mode=settings.dev_mode, mint=dev_mint, access=the_store, static_dir=STATIC_DIR
    )
    server.add_route("/metrics", metrics_route)
    server.add_route("/healthz", healthz)
    server.add_route("/readyz", readyz)
    http_api = None
    if settings.api_key:
        # Room for the largest operation core accepts, JSON-escaped, plus the envelope.
        max_body = 2 * settings.collab.max_operation_bytes + API_BODY_OVERHEAD
        http_api = HttpApi(api, key=settings.api_key, max_body=max_body)
        http_api.install(server.add_prefix_route)
    return App(
        server=server,
        service=service,
        store=the_store,
        presence=presence,
        api=api,
        http_api=http_api,
        recovery=recovery,
        # Only a shared presence has other instances to hand users over to.
        presence_handover=settings.presence_handover if settings.redis_url else 0.0,
    )


_background: set[asyncio.Task[None]] = set()
