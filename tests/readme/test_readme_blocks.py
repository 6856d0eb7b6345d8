"""Every fenced code block of README.md, run as written.

Convention (README.md says it in one line under "Using it"):

* The test starts the development server the way the README does, ``make
  serve PORT=<free port>`` in the checkout, with ``COWRITE_DATA_DIR`` set to a
  temporary directory (so the checkout's ``./data`` is left alone) and no other
  ``COWRITE_*`` variable from the caller.  Every block runs in the checkout with
  that same ``COWRITE_DATA_DIR``, so ``cowrite token --dev``, ``grant``,
  ``loadtest`` and the SDK example find the server's store and secret.
* Ports: ``127.0.0.1:3000`` in a block becomes the test server's free port,
  and ``3200`` / ``3300`` (the Library examples' ports) another free port.
  Nothing else is changed.
* A block may be preceded by ``<!-- readme: WHAT -->`` saying what it needs:

  ``make``              the ``make serve`` / ``make test`` block.  Not run
                        recursively: every line must be ``make TARGET ...``;
                        ``make -n TARGET`` must resolve, and ``make serve`` is
                        the command that started the test's server, with
                        ``PORT=`` honoured (its "listening on" line names the
                        free port).
  ``needs make serve``  runs against that server (also what a block without a
                        comment gets).
  ``serves NAME``       serves until stopped: it must print a line containing
                        ``listening on`` when ready; the test then exercises it
                        with the official client (``EXERCISES[NAME]``), stops
                        it with SIGINT and expects its "stopped" log line.

* ```` ```sh ```` blocks run with ``bash -euo pipefail`` with ``.venv/bin`` first
  on PATH (the README says that is how ``cowrite`` gets on PATH);
  ```` ```python ```` blocks run as scripts with the ``.venv`` Python.  Each must
  exit 0 without a traceback.

A block of another language, an unknown comment, or a ``serves`` block without
an exercise fails ``test_every_block_is_runnable``: adding a block the test
cannot run fails the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engineio
import pytest
import socketio

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # make checks its prerequisites first
BLOCK_TIMEOUT = 120.0

MARKER = re.compile(r"<!--\s*readme:\s*(?P<what>.*?)\s*-->")
LANGUAGES = {"sh", "python"}


@dataclass(frozen=True)
class Block:
    index: int
    line: int
    lang: str
    marker: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.index}-{self.lang}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks, each with the ``<!-- readme: ... -->`` comment right
    above it (blank lines allowed between), if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    marker = ""
    while i < len(lines):
        line = lines[i]
        found = MARKER.fullmatch(line.strip())
        if found:
            marker = found["what"]
        elif line.startswith("```"):
            lang = line[3:].strip()
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(len(blocks), start + 1, lang, marker, "\n".join(body) + "\n"))
            marker = ""
        elif line.strip():
            marker = ""  # a comment applies to the block right below it
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
    env["COWRITE_DATA_DIR"] = str(data_dir)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    env.pop("MAKELEVEL", None)
    return env


def wait_for_line(out: Path, process: subprocess.Popen[bytes], text: str, timeout: float) -> str:
    """Until ``text`` appears in the output file; fails with the output otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        seen = out.read_text(errors="replace") if out.exists() else ""
        if text in seen:
            return seen
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before {text!r}:\n{seen}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {timeout} s:\n{seen}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    """Signal the process group we started (make and its cowrite), then wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return -9


@dataclass
class DevServer:
    port: int
    data_dir: Path
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return clean_env(self.data_dir)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """``make serve PORT=<free>``, as the README says, on a temporary data directory."""
    root = tmp_path_factory.mktemp("readme")
    port = free_port()
    server = DevServer(port, root / "data", root / "make-serve.log")
    with server.log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "serve", f"PORT={port}"],
            cwd=REPO,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one
        )
    try:
        wait_for_line(server.log, process, "listening on", START_TIMEOUT)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        yield server
    finally:
        stop(process)
    text = server.log.read_text(errors="replace")
    assert "stopped listening on" in text, text


def substitute(body: str, ports: dict[str, int]) -> str:
    for old, new in ports.items():
        body = body.replace(old, str(new))
    return body


def check_ran(result: subprocess.CompletedProcess[str], block: Block) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"README block at line {block.line} failed:\n{output}"
    assert "Traceback" not in output, output


# -- exercises of the blocks that serve ----------------------------------------------


async def exercise_library(port: int) -> None:
    """Two official python-socketio clients in one room: a chat message
    reaches the other one and is acknowledged with {"ok": true}."""
    url = f"http://127.0.0.1:{port}"
    alice = socketio.AsyncClient(reconnection=False)
    bob = socketio.AsyncClient(reconnection=False)
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @bob.on("chat")
    def on_chat(text: str) -> None:
        if not got.done():
            got.set_result(text)

    await alice.connect(url, transports=["websocket"], wait_timeout=10)
    await bob.connect(url, wait_timeout=10)  # polling, then upgraded
    try:
        assert await alice.call("join", "room-1", timeout=10) == {"ok": True}
        assert await bob.call("join", "room-1", timeout=10) == {"ok": True}
        ack = await alice.call("chat", ("room-1", "hello from the README"), timeout=10)
        assert ack == {"ok": True}
        assert await asyncio.wait_for(got, 10) == "hello from the README"
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def exercise_one_port(port: int) -> None:
    """Every app of the "several apps on one port" block through its own path:
    the chat app's ack, the admin app's stats (which sees the chatter), the
    Engine.IO echo, and the plain route."""
    url = f"http://127.0.0.1:{port}"
    chatter = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    admin = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    raw = engineio.AsyncClient(handle_sigint=False)
    echoed: asyncio.Queue[Any] = asyncio.Queue()
    raw.on("message", echoed.put_nowait)
    try:
        await chatter.connect(url, wait_timeout=10)
        assert await chatter.call("chat", ("room-1", "hi"), timeout=10) == {"ok": True}
        await admin.connect(url, socketio_path="admin", transports=["websocket"], wait_timeout=10)
        assert await admin.call("stats", timeout=10) == {"chatters": 1}
        await raw.connect(url, engineio_path="engine.io", transports=["websocket"])
        await raw.send("echo me")
        assert await asyncio.wait_for(echoed.get(), 10) == "echo me"
        health = await asyncio.to_thread(urllib.request.urlopen, f"{url}/healthz", timeout=10)
        assert health.read() == b"ok"
    finally:
        await chatter.disconnect()
        await admin.disconnect()
        await raw.disconnect()


EXERCISES: dict[str, Callable[[int], Awaitable[None]]] = {
    "library": exercise_library,
    "one-port": exercise_one_port,
}


# -- the tests --------------------------------------------------------------------------


def test_every_block_is_runnable() -> None:
    assert len(BLOCKS) >= 4, "README.md's code blocks were not found"
    for block in BLOCKS:
        assert block.lang in LANGUAGES, f"line {block.line}: no runner for ```{block.lang}"
        kind, _, name = block.marker.partition(" ")
        if block.marker in ("", "needs make serve"):
            continue
        if block.marker == "make":
            assert block.lang == "sh"
            continue
        assert kind == "serves" and name in EXERCISES, (
            f"line {block.line}: unknown <!-- readme: {block.marker} -->"
        )


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, dev_server: DevServer, tmp_path: Path) -> None:
    ports = {"127.0.0.1:3000": f"127.0.0.1:{dev_server.port}"}
    kind, _, name = block.marker.partition(" ")
    if block.marker == "make":
        run_make_block(block, dev_server)
    elif kind == "serves":
        run_serving_block(block, dev_server, tmp_path, EXERCISES[name])
    else:
        if block.lang == "sh":
            command = ["bash", "-euo", "pipefail", "-c", substitute(block.body, ports)]
        else:
            script = tmp_path / f"readme_block_{block.index}.py"
            script.write_text(substitute(block.body, ports), encoding="utf-8")
            command = [sys.executable, str(script)]
        result = subprocess.run(
            command,
            cwd=REPO,
            env=dev_server.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        check_ran(result, block)


def run_make_block(block: Block, dev_server: DevServer) -> None:
    """``make serve`` started the test's server (PORT honoured); ``make test`` is
    not run from inside the test suite: it must resolve (``make -n``)."""
    for line in block.body.splitlines():
        command = line.split("#", 1)[0].split()
        if not command:
            continue
        assert command[0] == "make" and len(command) == 2, f"not a make target: {line!r}"
        target = command[1]
        dry = subprocess.run(
            ["make", "-n", "--no-print-directory", target],
            cwd=REPO,
            env=dev_server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert dry.returncode == 0, dry.stdout + dry.stderr
    log = dev_server.log.read_text(errors="replace")
    assert f"cowrite serve --dev --port {dev_server.port}" in log  # make serve PORT=...
    assert f"listening on http://127.0.0.1:{dev_server.port}" in log


def run_serving_block(
    block: Block,
    dev_server: DevServer,
    tmp_path: Path,
    exercise: Callable[[int], Awaitable[None]],
) -> None:
    port = free_port()
    script = tmp_path / f"readme_block_{block.index}.py"
    # The Library block listens on 3200, the one-port block on 3300.
    script.write_text(substitute(block.body, {"3200": port, "3300": port}), encoding="utf-8")
    out = tmp_path / "served.log"
    with out.open("wb") as fh:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=REPO,
            env=dev_server.env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        seen = wait_for_line(out, process, "listening on", 30.0)
        assert f"127.0.0.1:{port}" in seen, seen
        asyncio.run(asyncio.wait_for(exercise(port), 60))
    finally:
        code = stop(process)
    text = out.read_text(errors="replace")
    assert code == 0, text
    assert "Traceback" not in text, text
    assert f"stopped listening on http://127.0.0.1:{port}" in text, text
