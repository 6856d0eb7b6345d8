"""`cowrite serve` shuts down gracefully on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import socketio

from cowrite.auth import AuthSettings, mint_token

SECRET = "shutdown-test-secret-" + "s" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    """``cowrite serve`` on ``port`` (SQLite in ``data_dir``), once it listens."""
    env = {**os.environ, "COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "http://x"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cowrite", "serve", "--port", str(port),
        "--data-dir", str(data_dir), "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"listening" in line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = await serve(tmp_path, port)
    try:
        client = socketio.AsyncClient(reconnection=False)
        gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        client.on("disconnect", lambda reason=None: gone.done() or gone.set_result(str(reason)))
        token = mint_token(AuthSettings(secret=SECRET), user_id="u1")
        await client.connect(
            f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"]
        )
        ack = await client.call("join-document", "doc", timeout=10)
        assert ack["ok"]
        seq = await client.call(
            "edit-operation", {"documentId": "doc", "operation": 1, "clientOpId": "a"}, timeout=10
        )
        assert seq["seq"] == 1
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        reason = await asyncio.wait_for(gone, 5)
        # Not "io server disconnect": the client is expected to reconnect.
        assert "server disconnect" not in reason
        await client.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_edits_after_the_drain_notice_are_still_committed_and_acked(
    tmp_path: Path,
) -> None:
    """Between the drain notice and the close (DRAIN_NOTICE_PAUSE) the
    instance still commits and acknowledges edits: a client that edits on
    receiving the notice gets its seq, and the operation is in the log."""
    port = free_port()
    proc = await serve(tmp_path, port)
    try:
        client = socketio.AsyncClient(reconnection=False)
        notice: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        client.on("server-draining", lambda data: notice.done() or notice.set_result(data))
        token = mint_token(AuthSettings(secret=SECRET), user_id="u1")
        await client.connect(
            f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"]
        )
        assert (await client.call("join-document", "doc", timeout=10))["ok"]
        first = {"documentId": "doc", "operation": 1, "clientOpId": "a"}
        assert (await client.call("edit-operation", first, timeout=10))["seq"] == 1
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(notice, 10)
        second = {"documentId": "doc", "operation": 2, "clientOpId": "b"}
        ack = await client.call("edit-operation", second, timeout=10)
        assert ack == {"ok": True, "documentId": "doc", "seq": 2}
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await client.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    from cowrite.backends.store_sqlite import SqliteStore

    store = SqliteStore(tmp_path / "cowrite.db")
    await store.open()
    try:
        ops = await store.read_ops("doc", 0, 10)
    finally:
        await store.close()
    assert [(op.seq, op.client_op_id) for op in ops] == [(1, "a"), (2, "b")]


async def _get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a new connection (``Connection: close``): status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_drain_without_polling_sessions_refuses_new_connections_at_once(
    make_settings: Any, start_server: Any
) -> None:
    """No polling session needs the listener: it closes when the drain
    begins, while the WebSocket sessions are still served."""
    from websockets.asyncio.client import connect

    from cowrite.server import EngineServer

    server = await start_server(EngineServer(make_settings(path="/engine.io/")))
    port = server.port
    url = f"ws://127.0.0.1:{port}/engine.io/?EIO=4&transport=websocket"
    async with connect(url) as ws:
        assert (await asyncio.wait_for(ws.recv(), 5))[0] == "0"  # the Engine.IO OPEN
        server.begin_drain()
        with pytest.raises(ConnectionRefusedError):
            await _get(port, "/engine.io/?EIO=4&transport=polling")
        await ws.send("2probe")  # the open session goes on being served
        assert await asyncio.wait_for(ws.recv(), 5) == "3probe"


async def test_drain_refuses_new_connections_once_no_polling_session_waits(
    make_settings: Any, start_server: Any
) -> None:
    """While a closing polling session waits for its last GET (which may come
    on a new connection), the listener stays open; once it is gone, new
    connections are refused by the kernel at once (a load balancer moves on
    without waiting for the draining process)."""
    from cowrite.errors import CloseReason
    from cowrite.server import EngineServer

    server = await start_server(EngineServer(make_settings(path="/engine.io/")))
    port = server.port
    status, body = await _get(port, "/engine.io/?EIO=4&transport=polling")
    assert status == 200
    sid = json.loads(body[1:])["sid"]
    server.begin_drain()
    server.close_sessions(CloseReason.SERVER_SHUTDOWN)
    waiting = asyncio.create_task(server.wait_sessions_closed(5.0, stop_accepting=True))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    # Still accepting: the polling client collects its CLOSE packet.
    status, body = await _get(port, f"/engine.io/?EIO=4&transport=polling&sid={sid}")
    assert (status, body) == (200, b"1")
    assert await asyncio.wait_for(waiting, 5) is True
    with pytest.raises(ConnectionRefusedError):
        await _get(port, "/engine.io/?EIO=4&transport=polling")
