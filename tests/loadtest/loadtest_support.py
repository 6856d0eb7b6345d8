"""Helpers of the load-generator suite: a free port, the environment a
``cowrite serve`` subprocess and the load generator need, and running
``python -m cowrite.loadtest`` as a subprocess (bounded)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

SECRET = "loadtest-suite-secret-" + "l" * 32
SERVER_ENV = {
    "COWRITE_AUTH_SECRET": SECRET,
    "COWRITE_AUTH_DOCS_CLAIM": "1",
    "COWRITE_CORS_ORIGINS": "http://localhost",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_loadtest(*args: str, timeout: float = 45.0) -> dict[str, Any]:
    """Run the command with ``--json --quiet``; return the parsed report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cowrite.loadtest", *args, "--json", "--quiet",
        env={**os.environ, "COWRITE_AUTH_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")
    report: dict[str, Any] = json.loads(out)
    return report


async def start_server(port: int, db: str) -> asyncio.subprocess.Process:
    """``cowrite serve`` on ``port`` over the SQLite file ``db``, once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cowrite", "serve", "--port", str(port),
        "--store", f"sqlite:///{db}", "--log-level", "warning",
        env={**os.environ, **SERVER_ENV},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert b"listening" in line, line
    return proc


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
