"""What the browser suite shares: paths, the ``cowrite serve`` subprocess,
skip-or-fail for missing tools.  Fixtures are in conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
OUTPUT = REPO / "test-output" / "browser"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def missing(reason: str) -> None:
    """Skip, or fail when ``CI`` is set (a CI run must not pass by skipping)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    base: str
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_healthy(served: Served) -> None:
    """Until ``/healthz`` answers 200; fails with the server's log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(
                f"cowrite serve exited with {served.process.returncode}:\n{served.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{served.base}/healthz", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    pytest.fail(
        f"cowrite serve did not answer /healthz within {START_TIMEOUT} s:\n{served.log_tail()}"
    )
