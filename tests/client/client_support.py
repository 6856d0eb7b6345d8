"""A cowrite application started in-process for the client tests: real SQLite
store, restartable on the same port and the same database file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = "client-test-secret-" + "z" * 32  # HS256 wants at least 32 bytes
#: Bound, in seconds, of any one wait in these tests.
WAIT = 10.0


def token(user_id: str, ttl: float = 600, **kw: Any) -> str:
    from cowrite.auth import AuthSettings, mint_token

    secret = kw.pop("secret", SECRET)
    return mint_token(AuthSettings(secret=secret), user_id=user_id, ttl=ttl, **kw)


@dataclass
class LiveServer:
    data_dir: Path
    port: int = 0
    app: Any = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LiveServer:
        from cowrite.app import build_app
        from cowrite.config import load_app_settings

        settings = load_app_settings(
            environ={"COWRITE_AUTH_SECRET": SECRET, "COWRITE_CORS_ORIGINS": "http://localhost"},
            server_overrides={
                "host": "127.0.0.1",
                "port": self.port,
                "use_uvloop": False,
                "gc_freeze": False,
            },
            store=f"sqlite:///{self.data_dir}/cowrite.db",
            data_dir=str(self.data_dir),
            dev_mode=False,
        )
        app = build_app(settings)
        await asyncio.wait_for(app.start(), 15.0)
        self.app = app
        self.port = app.port
        self.starts += 1
        return self

    async def stop(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            await asyncio.wait_for(app.stop(), 15.0)


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms; ``AssertionError`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or predicate}"
        ) from None
