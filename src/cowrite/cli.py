"""The ``cowrite`` command line."""

from __future__ import annotations

import logging
import sys

import click

from cowrite import runtime
from cowrite.config import settings_from_env
from cowrite.errors import ConfigError


@click.group()
@click.version_option(package_name="cowrite")
def main() -> None:
    """cowrite: real-time collaboration server (Socket.IO protocol)."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [3000].")
@click.option("--ping-interval", type=float, default=None, help="Seconds between pings [25].")
@click.option("--ping-timeout", type=float, default=None, help="Seconds to wait for a pong [20].")
@click.option("--max-payload", type=int, default=None, help="Largest message in bytes [1000000].")
@click.option(
    "--connect-timeout", type=float, default=None, help="Seconds to join a namespace [45]."
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allowed browser Origin (repeatable; * = any).",
)
@click.option("--transports", default=None, help="Comma-separated: websocket,polling.")
@click.option("--send-buffer-limit", type=int, default=None, help="Slow-consumer limit in bytes.")
@click.option("--no-uvloop", is_flag=True, default=False, help="Use asyncio's own event loop.")
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str | None,
    port: int | None,
    ping_interval: float | None,
    ping_timeout: float | None,
    max_payload: int | None,
    connect_timeout: float | None,
    cors_origins: tuple[str, ...],
    transports: str | None,
    send_buffer_limit: int | None,
    no_uvloop: bool,
    log_level: str,
) -> None:
    """Run the server until SIGTERM/SIGINT (then shut down gracefully)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = settings_from_env(
            host=host,
            port=port,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_payload=max_payload,
            connect_timeout=connect_timeout,
            cors_origins=cors_origins or None,
            transports=tuple(t.strip() for t in transports.split(",")) if transports else None,
            send_buffer_limit=send_buffer_limit,
            use_uvloop=False if no_uvloop else None,
        )
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    from cowrite.app import build_relay_server

    async def run() -> None:
        server = build_relay_server(settings)
        await server.start()
        if settings.gc_freeze:
            runtime.tune_gc()
        click.echo(f"cowrite listening on http://{settings.host}:{server.port}{settings.path}")
        await server.serve_until_signal()

    runtime.run(run(), use_uvloop=settings.use_uvloop)
