"""The ``cowrite`` command as a newcomer meets it: role management needs only
the store, messages speak English (no Python reprs), ``serve`` says in one
line when its port is taken and logs where it listens and that it stopped,
``check-config`` refuses misspelled keys, ``--help`` names the environment
variables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner, Result

from cowrite.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "cowrite.example.toml"
SECRET = "s" * 40


def run(args: list[str], data_dir: Path, **env: str | None) -> Result:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COWRITE_")}
    clean.update(env)
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], env=clean)


def test_grant_and_revoke_need_no_signing_key(tmp_path: Path) -> None:
    # No COWRITE_AUTH_SECRET and no --dev: only the store is needed.
    refused = run(["grant", "doc-1", "bob", "editor"], tmp_path)
    assert refused.exit_code == 1
    assert "no document 'doc-1'" in refused.output
    assert "--create --owner USER" in refused.output
    assert "JWT" not in refused.output

    created = run(["grant", "--create", "--owner", "alice", "doc-1", "bob", "editor"], tmp_path)
    assert created.exit_code == 0, created.output
    assert created.output.splitlines() == ["created doc-1 (owner alice)", "bob is editor of doc-1"]

    again = run(["grant", "doc-1", "bob", "viewer"], tmp_path)
    assert again.exit_code == 0 and again.output == "bob is viewer of doc-1\n"

    revoked = run(["revoke", "doc-1", "bob"], tmp_path)
    assert revoked.exit_code == 0 and revoked.output == "revoked bob on doc-1\n"
    missing = run(["revoke", "doc-1", "bob"], tmp_path)
    assert missing.exit_code == 1
    assert "bob has no role on doc-1" in missing.output


def test_grant_create_needs_an_owner(tmp_path: Path) -> None:
    result = run(["grant", "--create", "doc-1", "bob", "editor"], tmp_path)
    assert result.exit_code == 2 and "--owner" in result.output


def test_the_owner_named_by_create_owns_the_document(tmp_path: Path) -> None:
    import asyncio

    from cowrite.backends.store import Role
    from cowrite.backends.store_sqlite import SqliteStore

    assert (
        run(["grant", "--create", "--owner", "alice", "d", "bob", "viewer"], tmp_path).exit_code
        == 0
    )

    async def roles() -> dict[str, Role]:
        store = SqliteStore(str(tmp_path / "cowrite.db"))
        await store.open()
        try:
            return await store.list_roles("d")
        finally:
            await store.close()

    assert asyncio.run(roles()) == {"alice": Role.OWNER, "bob": Role.VIEWER}


def test_token_ttl_is_exact_and_messages_are_english(tmp_path: Path) -> None:
    result = run(["token", "--user", "alice", "--ttl", "1"], tmp_path, COWRITE_AUTH_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 1

    short = run(["token", "--user", "alice"], tmp_path, COWRITE_AUTH_SECRET="short")
    assert short.exit_code == 2
    assert short.output.strip() == "error: the secret must be at least 32 bytes long for HS256"

    bad_doc = run(["token", "--dev", "--user", "a", "--doc", "d=boss"], tmp_path)
    assert bad_doc.exit_code == 2
    assert "ROLE one of owner, editor, viewer" in bad_doc.output
    for text in (short.output, bad_doc.output):
        assert "['" not in text and "('" not in text  # no Python list or tuple reprs

    port = run(["check-config", "--dev"], tmp_path, COWRITE_PORT="x")
    assert port.exit_code == 2
    assert port.output.strip() == "error: COWRITE_PORT: expected a whole number, got 'x'"


def test_check_config_refuses_unknown_keys_with_the_nearest_name(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("pingg_interval = 5\n")
    result = run(["check-config", "--dev", "--config", str(cfg)], tmp_path)
    assert result.exit_code == 2
    assert "unknown setting 'pingg_interval': did you mean 'ping_interval'?" in result.output
    cfg.write_text('[auth]\nsecrett = "x"\n')
    result = run(["check-config", "--dev", "--config", str(cfg)], tmp_path)
    assert result.exit_code == 2
    assert "unknown setting [auth] 'secrett': did you mean 'secret'?" in result.output


def test_the_example_settings_file_passes_check_config(tmp_path: Path) -> None:
    result = run(["check-config", "--config", str(EXAMPLE)], tmp_path, COWRITE_AUTH_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    assert '"mode": "production"' in result.output
    assert '"secret": "***"' in result.output
    assert SECRET not in result.output


def test_compact_applies_the_retention_settings(tmp_path: Path) -> None:
    import asyncio

    from cowrite.backends.store import AppendRequest
    from cowrite.backends.store_sqlite import SqliteStore

    async def prepare() -> None:
        store = SqliteStore(tmp_path / "cowrite.db")
        await store.open()
        for doc in ("a", "b"):
            await store.create_document(doc, "alice")
            await store.append_batch([AppendRequest(doc, "alice", None, b"J1")] * 10)
        await store.store_snapshot("a", 8, "alice", b"J8")
        await store.close()

    asyncio.run(prepare())
    # Ops are younger than the default 7 days: nothing goes.
    kept = run(["compact"], tmp_path)
    assert kept.exit_code == 0, kept.output
    assert kept.output.splitlines() == [
        "a: deleted 0 operations and 0 older snapshots; the log starts at seq 1",
        "compacted 1 documents, 0 operations deleted",
    ]
    # Flags over the environment over the defaults.
    done = run(["compact", "--keep-days", "0"], tmp_path, COWRITE_COMPACT_KEEP_OPS="3")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == (
        "a: deleted 5 operations and 0 older snapshots; the log starts at seq 6"
    )
    named = run(["compact", "a", "b", "nope", "--keep-ops", "0", "--keep-days", "0"], tmp_path)
    assert named.exit_code == 1
    assert "a: deleted 3 operations" in named.output
    assert "b: deleted 0 operations" in named.output  # no snapshot: nothing
    assert "error: no document 'nope'" in named.output
    bad = run(["compact"], tmp_path, COWRITE_COMPACT_KEEP_DAYS="soon")
    assert bad.exit_code == 2 and "COWRITE_COMPACT_KEEP_DAYS" in bad.output


def test_serve_help_names_every_options_environment_variable() -> None:
    import click

    serve_command = main.commands["serve"]
    options = [p for p in serve_command.params if isinstance(p, click.Option)]
    assert len(options) >= 19
    for option in options:
        assert option.help is not None and "env COWRITE_" in option.help, option.name
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    assert "COWRITE_PORT" in result.output and "COWRITE_CORS_ORIGINS" in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(port: int, data_dir: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
    with out.open("wb") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cowrite",
                "serve",
                "--dev",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--no-uvloop",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "out.log"
        process = serve(port, tmp_path / "data", out)
        assert process.wait(timeout=30) == 1
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    assert lines == [
        f"error: port {port} is already in use (127.0.0.1:{port}): "
        "choose another with --port N, COWRITE_PORT=N or make serve PORT=N"
    ]


def test_serve_logs_where_it_listens_and_that_it_stopped(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.log"
    process = serve(port, tmp_path / "data", out)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, out.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = out.read_text()
    assert f"listening on http://127.0.0.1:{port}" in text
    assert f"stopped listening on http://127.0.0.1:{port}" in text
    assert '"event": "stopped"' in text or "stopped: every session closed" in text


@pytest.mark.parametrize("port", ["", "3100"])
def test_make_serve_honours_port(port: str) -> None:
    args = ["make", "-n", "--no-print-directory", "-C", str(REPO), "serve"] + (
        [f"PORT={port}"] if port else []
    )
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(".venv/bin/cowrite serve --dev")
    assert last.endswith(f"--port {port}") if port else "--port" not in last
