"""The ``cowrite`` command line (click).  Every option also reads ``COWRITE_*``."""

from __future__ import annotations

import asyncio
import errno
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from cowrite import logs, runtime
from cowrite.config import (
    AppSettings,
    load_app_settings,
    load_auth_settings,
    load_retention,
    load_store_url,
)
from cowrite.errors import CowriteError

T = TypeVar("T")

store_option = click.option(
    "--store",
    default=None,
    help="sqlite:///PATH or postgresql://DSN [sqlite in --data-dir; env COWRITE_STORE].",
)
data_dir_option = click.option(
    "--data-dir", default=None, help="Data directory [./data; env COWRITE_DATA_DIR]."
)
config_option = click.option(
    "--config",
    "config_file",
    default=None,
    help="TOML settings file, below env and flags (deploy/cowrite.example.toml; "
    "env COWRITE_CONFIG).",
)
dev_option = click.option(
    "--dev/--production",
    "dev_mode",
    default=None,
    help="Development mode: generated JWT secret kept in the data directory "
    "[production; env COWRITE_DEV=1].",
)


def _settings(**kwargs: Any) -> AppSettings:
    try:
        return load_app_settings(**kwargs)
    except CowriteError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _store_url(**kwargs: Any) -> str:
    try:
        return load_store_url(**kwargs)
    except CowriteError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _run_store(store_url: str, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from cowrite.app import open_store

    async def run() -> T:
        store = open_store(store_url)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
@click.version_option(package_name="cowrite")
def main() -> None:
    """cowrite: real-time collaboration server (Socket.IO protocol)."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [127.0.0.1; env COWRITE_HOST].")
@click.option("--port", type=int, default=None, help="Port to listen on [3000; env COWRITE_PORT].")
@click.option(
    "--ping-interval",
    type=float,
    default=None,
    help="Seconds between pings [25; env COWRITE_PING_INTERVAL].",
)
@click.option(
    "--ping-timeout",
    type=float,
    default=None,
    help="Seconds to wait for a pong [20; env COWRITE_PING_TIMEOUT].",
)
@click.option(
    "--max-payload",
    type=int,
    default=None,
    help="Largest message in bytes [1000000; env COWRITE_MAX_PAYLOAD].",
)
@click.option(
    "--connect-timeout",
    type=float,
    default=None,
    help="Seconds to connect [45; env COWRITE_CONNECT_TIMEOUT].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allowed browser Origin, repeatable [env COWRITE_CORS_ORIGINS, comma-separated].",
)
@click.option(
    "--transports",
    default=None,
    help="Comma-separated: websocket,polling [both; env COWRITE_TRANSPORTS].",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="CIDR whose X-Real-IP is believed, repeatable [env COWRITE_TRUSTED_PROXIES].",
)
@click.option(
    "--send-buffer-limit",
    type=int,
    default=None,
    help="Slow-consumer limit in bytes [1048576; env COWRITE_SEND_BUFFER_LIMIT].",
)
@click.option(
    "--no-uvloop",
    is_flag=True,
    default=False,
    help="Use asyncio's own event loop [env COWRITE_USE_UVLOOP=0].",
)
@click.option(
    "--auto-create/--no-auto-create",
    default=None,
    help="Create documents on join [on; env COWRITE_AUTO_CREATE].",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="redis://HOST:PORT: share with other instances [env COWRITE_REDIS_URL].",
)
@click.option(
    "--instance-id",
    default=None,
    help="This instance's id [hostname-random; env COWRITE_INSTANCE_ID].",
)
@click.option(
    "--api/--no-api",
    default=None,
    help="Serve the HTTP API at /api/ (key: env COWRITE_API_KEY; --dev generates one "
    "in the data directory) [on with a key or --dev; env COWRITE_API].",
)
@click.option(
    "--compact-interval",
    type=float,
    default=None,
    help="Seconds between background log compactions, 0 = off [0; env COWRITE_COMPACT_INTERVAL].",
)
@click.option(
    "--recovery/--no-recovery",
    default=None,
    help="Socket.IO connection-state recovery: a client that lost its connection "
    "resumes its socket (rooms, missed remote-edits) [off; env COWRITE_RECOVERY].",
)
@click.option(
    "--recovery-window",
    type=float,
    default=None,
    help="Seconds a lost socket can be resumed [120; env COWRITE_RECOVERY_WINDOW].",
)
@store_option
@data_dir_option
@dev_option
@config_option
@click.option(
    "--log-level",
    envvar="COWRITE_LOG_LEVEL",
    default="info",
    help="debug, info, warning or error [info; env COWRITE_LOG_LEVEL].",
)
def serve(
    host: str | None,
    port: int | None,
    ping_interval: float | None,
    ping_timeout: float | None,
    max_payload: int | None,
    connect_timeout: float | None,
    cors_origins: tuple[str, ...],
    transports: str | None,
    trusted_proxies: tuple[str, ...],
    send_buffer_limit: int | None,
    no_uvloop: bool,
    auto_create: bool | None,
    redis_url: str | None,
    instance_id: str | None,
    api: bool | None,
    compact_interval: float | None,
    recovery: bool | None,
    recovery_window: float | None,
    store: str | None,
    data_dir: str | None,
    dev_mode: bool | None,
    config_file: str | None,
    log_level: str,
) -> None:
    """Run the server until SIGTERM/SIGINT, then drain and stop gracefully."""
    logs.configure(log_level)
    settings = _settings(
        server_overrides={
            "host": host,
            "port": port,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "max_payload": max_payload,
            "connect_timeout": connect_timeout,
            "cors_origins": cors_origins or None,
            "transports": tuple(t.strip() for t in transports.split(",")) if transports else None,
            "send_buffer_limit": send_buffer_limit,
            "trusted_proxies": trusted_proxies or None,
            "use_uvloop": False if no_uvloop else None,
        },
        store=store,
        data_dir=data_dir,
        dev_mode=dev_mode,
        auto_create=auto_create,
        redis_url=redis_url,
        instance_id=instance_id,
        api=api,
        config_file=config_file,
        retention_overrides={"interval": compact_interval},
        recovery=recovery,
        recovery_window=recovery_window,
    )
    from cowrite.app import build_app

    async def run() -> None:
        app = build_app(settings)
        try:
            await app.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            where = f"{settings.server.host}:{settings.server.port}"
            click.echo(
                f"error: port {settings.server.port} is already in use ({where}): "
                "choose another with --port N, COWRITE_PORT=N or make serve PORT=N",
                err=True,
            )
            sys.exit(1)
        if settings.server.gc_freeze:
            runtime.tune_gc()
        mode = "development" if settings.dev_mode else "production"
        click.echo(
            f"cowrite listening on http://{settings.server.host}:{app.port} "
            f"({mode} mode, store {settings.store.split('@')[-1]})"
        )
        if settings.api_key:
            click.echo(f"server API at http://{settings.server.host}:{app.port}/api/")
        try:
            await app.server.wait_for_signal()
        finally:
            await app.stop()

    runtime.run(run(), use_uvloop=settings.server.use_uvloop)


@main.command()
@click.option("--user", "user_id", required=True, help="User id (the token's sub).")
@click.option("--name", default=None, help="Display name [the user id].")
@click.option("--ttl", type=float, default=3600.0, show_default=True, help="Seconds of validity.")
@click.option("--doc", "docs", multiple=True, help="DOC=ROLE grant in the docs claim (repeatable).")
@data_dir_option
@dev_option
def token(
    user_id: str,
    name: str | None,
    ttl: float,
    docs: tuple[str, ...],
    data_dir: str | None,
    dev_mode: bool | None,
) -> None:
    """Mint a JWT with the configured secret (development and tests)."""
    from cowrite.auth import mint_token, parse_doc_grants

    try:
        auth = load_auth_settings(data_dir=data_dir, dev_mode=dev_mode)
        grants = parse_doc_grants(docs) if docs else None
        click.echo(mint_token(auth, user_id=user_id, name=name, ttl=ttl, docs=grants))
    except CowriteError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.argument("document_id")
@click.argument("user_id")
@click.argument("role", type=click.Choice(["owner", "editor", "viewer"]))
@click.option(
    "--create", is_flag=True, help="Create DOCUMENT_ID if it does not exist (needs --owner)."
)
@click.option("--owner", default=None, help="Owner of the document --create creates.")
@store_option
@data_dir_option
@dev_option
@config_option
def grant(
    document_id: str,
    user_id: str,
    role: str,
    create: bool,
    owner: str | None,
    store: str | None,
    data_dir: str | None,
    dev_mode: bool | None,
    config_file: str | None,
) -> None:
    """Give USER_ID the ROLE on DOCUMENT_ID.  Only the store is needed (no JWT
    key); running servers apply the change within their role cache time (5 s).
    An unknown document is refused unless --create --owner USER names who owns it."""
    from cowrite.backends.store import Role

    if create and not owner:
        raise click.UsageError("--create needs --owner USER: the document's owner")
    if owner and not create:
        raise click.UsageError("--owner goes with --create")
    url = _store_url(store=store, data_dir=data_dir, config_file=config_file)

    async def act(s: Any) -> str | None:
        created = None
        if not await s.document_exists(document_id):
            if not create:
                return None
            assert owner is not None
            if await s.create_document(document_id, owner):
                created = f"created {document_id} (owner {owner})"
        await s.set_role(document_id, user_id, Role(role))
        return created or ""

    done = _run_store(url, act)
    if done is None:
        click.echo(
            f"error: no document {document_id!r}: create it with its owner, e.g. "
            f"cowrite grant --create --owner USER {document_id} {user_id} {role}",
            err=True,
        )
        sys.exit(1)
    if done:
        click.echo(done)
    click.echo(f"{user_id} is {role} of {document_id}")


@main.command()
@click.argument("document_id")
@click.argument("user_id")
@store_option
@data_dir_option
@dev_option
@config_option
def revoke(
    document_id: str,
    user_id: str,
    store: str | None,
    data_dir: str | None,
    dev_mode: bool | None,
    config_file: str | None,
) -> None:
    """Remove USER_ID's access to DOCUMENT_ID (running servers enforce it within
    their role cache time, 5 s by default).  Exits 1 when there is no such grant."""
    url = _store_url(store=store, data_dir=data_dir, config_file=config_file)

    from cowrite.web import LINK_USER

    async def act(s: Any) -> tuple[bool, Any]:
        removed: bool = await s.revoke(document_id, user_id)
        return removed, await s.get_role(document_id, LINK_USER)

    removed, link = _run_store(url, act)
    if not removed:
        click.echo(f"error: {user_id} has no role on {document_id}: nothing to revoke", err=True)
        sys.exit(1)
    click.echo(f"revoked {user_id} on {document_id}")
    if link is not None and user_id != LINK_USER:
        # The demo (dev mode) gives the link role to whoever opens the link.
        click.echo(
            f"note: {document_id} is shared with anyone with the link (as {link.value}): "
            f"in the demo {user_id} gets that role again on the next visit; "
            f"`cowrite revoke {document_id} '{LINK_USER}'` stops sharing the link"
        )


@main.command()
@store_option
@data_dir_option
@dev_option
@config_option
def migrate(
    store: str | None, data_dir: str | None, dev_mode: bool | None, config_file: str | None
) -> None:
    """Apply the store's schema migrations (serve does it on start too)."""
    url = _store_url(store=store, data_dir=data_dir, config_file=config_file)

    async def act(s: Any) -> None:
        await s.migrate()

    _run_store(url, act)
    click.echo("migrations applied")


@main.command()
@click.argument("document_ids", nargs=-1)
@click.option(
    "--keep-ops",
    type=click.IntRange(min=0),
    default=None,
    help="Operations kept below the newest snapshot [10000; env COWRITE_COMPACT_KEEP_OPS].",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Days of operations kept before the newest snapshot [7; env COWRITE_COMPACT_KEEP_DAYS].",
)
@store_option
@data_dir_option
@dev_option
@config_option
def compact(
    document_ids: tuple[str, ...],
    keep_ops: int | None,
    keep_days: float | None,
    store: str | None,
    data_dir: str | None,
    dev_mode: bool | None,
    config_file: str | None,
) -> None:
    """Delete operations the newest snapshot of each document makes unnecessary:
    those more than --keep-ops operations AND --keep-days days older than it.
    DOCUMENT_IDS default to every document with a snapshot.  Running servers
    answer a client whose catch-up falls in the deleted range with the snapshot."""
    from cowrite.core.compaction import compact_documents

    url = _store_url(store=store, data_dir=data_dir, config_file=config_file)
    try:
        retention = load_retention(
            config_file=config_file, overrides={"keep_ops": keep_ops, "keep_days": keep_days}
        )
    except CowriteError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    done = _run_store(url, lambda s: compact_documents(s, retention, list(document_ids) or None))
    for c in done:
        click.echo(
            f"{c.document_id}: deleted {c.deleted_ops} operations and "
            f"{c.deleted_snapshots} older snapshots; the log starts at seq {c.kept_from}"
        )
    missing = sorted(set(document_ids) - {c.document_id for c in done})
    for document_id in missing:
        click.echo(f"error: no document {document_id!r}", err=True)
    click.echo(
        f"compacted {len(done)} documents, {sum(c.deleted_ops for c in done)} operations deleted"
    )
    if missing:
        sys.exit(1)


@main.command("check-config")
@store_option
@data_dir_option
@dev_option
@config_option
def check_config(
    store: str | None, data_dir: str | None, dev_mode: bool | None, config_file: str | None
) -> None:
    """Validate the settings (file, environment, flags) and print the effective ones."""
    import json

    from cowrite.config import effective_settings

    settings = _settings(store=store, data_dir=data_dir, dev_mode=dev_mode, config_file=config_file)
    click.echo(json.dumps(effective_settings(settings), indent=2, default=str))


def _register_loadtest() -> None:
    from cowrite.loadtest.cli import loadtest_command

    main.add_command(loadtest_command(), name="loadtest")


_register_loadtest()
