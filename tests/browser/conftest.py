"""Fixtures of the browser suite: ``cowrite serve`` as a subprocess, the built
demo page, Debian's Chromium.

The server is the real command (``python -m cowrite serve``) on a free
loopback port with a temporary data directory and no ``COWRITE_*`` variables
from the caller's environment.  Chromium is ``/usr/bin/chromium`` (Debian's
package; ``COWRITE_CHROMIUM`` overrides), driven by playwright-core from
``web/node_modules``: no browser is ever downloaded.  What is missing skips the
tests, except under ``CI`` where it fails them.  Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import OUTPUT, STOP_TIMEOUT, WEB, Served, free_port, missing, wait_healthy


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("node is not installed")
    assert path is not None
    for package in ("esbuild", "playwright-core", "socket.io-client", "yjs"):
        if not (WEB / "node_modules" / package / "package.json").exists():
            missing(f"web/node_modules/{package} is missing: run `cd web && npm ci`")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("COWRITE_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        missing(f"{path} is missing: apt-get install chromium")
    return path


@pytest.fixture(scope="session")
def web_build(node: str) -> Path:
    """Builds the page with esbuild (well under a second), so the tests see the sources."""
    from cowrite.web import STATIC_DIR

    result = subprocess.run(
        [node, "build.mjs"], cwd=WEB, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"web build failed:\n{result.stdout}\n{result.stderr}"
    for name in ("index.html", "app.js", "style.css"):
        assert (STATIC_DIR / name).is_file(), f"the build did not write {name}"
    return STATIC_DIR


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(dev=True)`` -> a running ``cowrite serve``; stopped (SIGTERM) at teardown."""
    started: list[Served] = []

    def start(*, dev: bool = True) -> Served:
        port = free_port()
        index = len(started)
        data_dir = tmp_path / f"server-{index}"
        data_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
        if not dev:
            env["COWRITE_AUTH_SECRET"] = "browser-suite-secret-" + "x" * 32
            env["COWRITE_CORS_ORIGINS"] = "https://app.example"
        log = tmp_path / f"server-{index}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cowrite",
                    "serve",
                    "--dev" if dev else "--production",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                ],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        served = Served(f"http://127.0.0.1:{port}", port, data_dir, log, process)
        started.append(served)
        wait_healthy(served)
        return served

    yield start
    for served in reversed(started):
        served.process.terminate()
        try:
            served.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """``test-output/browser/<test>/``, emptied first: screenshots land here."""
    path = OUTPUT / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
