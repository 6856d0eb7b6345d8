"""``cowrite loadtest``: the click command (registered by ``cowrite.cli``)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from cowrite.errors import ConfigError
from cowrite.loadtest.plan import Plan, default_workers

_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "INT": signal.SIGINT}


class _Progress:
    """One refreshing status line on stderr (a new line every 5 s when not a terminal)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.shown = False

    def __call__(self, phase: str, elapsed: float, snap: dict[str, Any]) -> None:
        plan = self.plan
        if phase == "connect":
            done = snap.get("attempted", 0)
            width = 24
            filled = int(width * done / plan.clients) if plan.clients else width
            text = (
                f"connect [{'#' * filled}{'.' * (width - filled)}] {done:,}/{plan.clients:,}"
                f"  joined {snap.get('connected', 0):,}  failed {snap.get('connect_failed', 0):,}"
                f"  {elapsed:5.1f} s"
            )
        else:
            p95 = snap["latency"].quantile(0.95)
            text = (
                f"edit {max(0.0, min(elapsed, plan.duration)):5.1f}/{plan.duration:g} s"
                f"  connected {snap.get('connected', 0):,}  sent {snap.get('sent', 0):,}"
                f"  delivered {snap.get('delivered', 0):,}"
                f"  p95 {'-' if p95 is None else f'{p95 / 1000:.1f} ms'}"
                f"  reconnecting {snap.get('reconnecting', 0):,}"
            )
        now = time.monotonic()
        if self.tty:
            click.echo(f"\r\x1b[2K{text}", nl=False, err=True)
            self.shown = True
        elif now - self.last_line >= 5.0:
            self.last_line = now
            click.echo(text, err=True)

    def finish(self) -> None:
        if self.shown:
            click.echo("", err=True)


def _read_tokens(path: str) -> tuple[str, ...]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@click.command(name="loadtest")
@click.option(
    "--url",
    "urls",
    multiple=True,
    required=True,
    help="Server URL, http://HOST:PORT (repeatable: clients are spread round-robin).",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Connections to open.",
)
@click.option(
    "--room-size",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Clients per document.",
)
@click.option(
    "--editors",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of clients that edit (0.1 = 10 %).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    help="Edit operations per second, all editors together.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds of editing.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [one per 15,000 clients; at most 16,000 each].",
)
@click.option(
    "--connect-rate",
    type=click.FloatRange(min=1),
    default=2000.0,
    show_default=True,
    help="New connections per second, all workers together.",
)
@click.option(
    "--connect-concurrency",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Handshakes in flight per worker.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds for one connect + join.",
)
@click.option(
    "--op-bytes",
    type=click.IntRange(0, 60_000),
    default=64,
    show_default=True,
    help="Padding in each operation.",
)
@click.option(
    "--secret",
    envvar="COWRITE_AUTH_SECRET",
    default=None,
    help="HS256 secret to mint tokens with (env COWRITE_AUTH_SECRET) "
    "[the dev server's data/dev-jwt-secret when present].",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Tokens, one per line, line i for client i (instead of --secret).",
)
@click.option("--audience", default=None, help="aud claim of minted tokens.")
@click.option("--issuer", default=None, help="iss claim of minted tokens.")
@click.option("--run-id", default=None, help="Names users and documents [random].")
@click.option("--doc-prefix", default=None, help="Documents are PREFIX-<room> [lt-<run-id>].")
@click.option(
    "--source-base",
    default="127.0.0.2",
    show_default=True,
    help="Worker w binds BASE+w as source address (loopback targets only).",
)
@click.option("--no-source-spread", is_flag=True, help="Let the kernel pick source addresses.")
@click.option(
    "--backoff-base",
    type=click.FloatRange(min=0.001),
    default=0.25,
    show_default=True,
    help="Reconnection backoff base, seconds.",
)
@click.option(
    "--backoff-max",
    type=click.FloatRange(min=0.001),
    default=5.0,
    show_default=True,
    help="Reconnection backoff cap, seconds.",
)
@click.option(
    "--reconnect-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Give up reconnecting a client after this many seconds.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Reconnection attempts per outage.",
)
@click.option(
    "--fail-timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Skip an instance that refused a connection or answered 503 for this long, "
    "as nginx's max_fails=1 fail_timeout does (0: never skip).",
)
@click.option(
    "--drain",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds to wait for deliveries in flight after the last edit.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait between the connect phase and the edit phase.",
)
@click.option(
    "--server-pid",
    "server_pids",
    type=int,
    multiple=True,
    help="Local server process to sample (RSS, CPU); same order as --url.",
)
@click.option(
    "--kill-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds into the edit phase to signal --kill-pid.",
)
@click.option(
    "--kill-pid",
    "kill_pids",
    type=int,
    multiple=True,
    help="Process to signal at --kill-after (repeatable).",
)
@click.option(
    "--signal",
    "kill_signal",
    type=click.Choice(sorted(_SIGNALS)),
    default="TERM",
    show_default=True,
    help="TERM drains gracefully; KILL is a crash.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the JSON report to this file.",
)
@click.option("--check", is_flag=True, help="Exit 1 when an ADR-003 metric is missed.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def loadtest(**opts: Any) -> None:
    """Load-test cowrite servers against ADR-003's success metrics.

    Opens --clients WebSocket clients (raw Engine.IO v4 / Socket.IO v5, no
    python-socketio) from worker processes, each authenticated with a JWT and
    joined to its document (rooms of --room-size), drives edit-operation at
    --rate per second from the --editors share of clients for --duration
    seconds, and reports connection success, delivery latency of remote-edit
    (send -> receive, wall clock), reconnection time after drops, server
    memory growth per 1,000 connections (--server-pid) and the generator's own CPU
    per message.

    Documents are pre-shared with the token's docs claim (editors "editor",
    the others "viewer"): run the servers with COWRITE_AUTH_DOCS_CLAIM=1
    (``cowrite serve --dev`` honours it; its secret is found in
    ./data/dev-jwt-secret, or $COWRITE_DATA_DIR, when --secret is not given).

    Server memory is the growth of the servers' RSS from before the clients
    connected to when all were connected, per 1,000 connections.
    """
    from cowrite.loadtest.kill import KillSpec
    from cowrite.loadtest.runner import Run

    if opts["secret"] is None and opts["token_file"] is None:
        opts["secret"] = _dev_secret()
    if (opts["secret"] is None) == (opts["token_file"] is None):
        raise click.UsageError(
            "give exactly one of --secret (or COWRITE_AUTH_SECRET) or --token-file "
            "(against `cowrite serve --dev` run from the same directory, the secret "
            "in data/dev-jwt-secret is found by itself)"
        )
    if opts["kill_after"] is not None and not opts["kill_pids"]:
        raise click.UsageError("--kill-after needs --kill-pid")
    tokens = _read_tokens(opts["token_file"]) if opts["token_file"] else ()
    run_id = opts["run_id"] or secrets.token_hex(4)
    try:
        plan = Plan(
            urls=tuple(opts["urls"]),
            clients=opts["clients"],
            room_size=opts["room_size"],
            editors=opts["editors"],
            rate=opts["rate"],
            duration=opts["duration"],
            workers=opts["workers"] or default_workers(opts["clients"]),
            connect_rate=opts["connect_rate"],
            connect_concurrency=opts["connect_concurrency"],
            connect_timeout=opts["connect_timeout"],
            op_bytes=opts["op_bytes"],
            secret=opts["secret"],
            audience=opts["audience"],
            issuer=opts["issuer"],
            run_id=run_id,
            doc_prefix=opts["doc_prefix"] or "",
            source_base=None if opts["no_source_spread"] else opts["source_base"],
            backoff_base=opts["backoff_base"],
            backoff_max=opts["backoff_max"],
            reconnect_timeout=opts["reconnect_timeout"],
            fail_timeout=opts["fail_timeout"],
            max_attempts=opts["max_attempts"],
            drain=opts["drain"],
            settle=opts["settle"],
        )
        if plan.secret is not None:
            from cowrite.auth import AuthSettings

            AuthSettings(secret=plan.secret)  # too short a secret fails here, not in a worker
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    kill = None
    if opts["kill_after"] is not None:
        kill = KillSpec(
            after=opts["kill_after"],
            pids=tuple(opts["kill_pids"]),
            signal=_SIGNALS[opts["kill_signal"]],
        )
    progress = None if opts["quiet"] else _Progress(plan)
    run = Run(
        plan=plan,
        tokens=tokens,
        server_pids=tuple(opts["server_pids"]),
        kill=kill,
        on_progress=progress,
    )
    try:
        report = run.execute()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        if progress is not None:
            progress.finish()
    text = json.dumps(report, indent=2)
    if opts["output"]:
        Path(opts["output"]).write_text(text + "\n", encoding="utf-8")
    if opts["as_json"]:
        click.echo(text)
    else:
        from cowrite.loadtest.report import render_table

        click.echo(render_table(report))
    if opts["check"] and any(ch["ok"] is False for ch in report["adr"]):
        sys.exit(1)


def _dev_secret() -> str | None:
    """The secret ``cowrite serve --dev`` wrote into its data directory
    (``COWRITE_DATA_DIR`` or ``./data``), announced on stderr, or None."""
    path = Path(os.environ.get("COWRITE_DATA_DIR") or "data") / "dev-jwt-secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not secret:
        return None
    click.echo(f"using the development secret in {path} (written by cowrite serve --dev)", err=True)
    return secret


def loadtest_command() -> click.Command:
    """The ``loadtest`` command, for ``cowrite.cli`` to register."""
    return loadtest
