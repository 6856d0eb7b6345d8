"""Fixtures of the server API suite.

``api_app`` is one instance in this process (SQLite, the in-process broker);
``test_api_cluster.py`` starts several ``cowrite serve`` processes over
PostgreSQL and Redis with the scale-out suite's ``Cluster``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scaleout"))

from api_support import KEY, SECRET, WAIT, Api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


@pytest.fixture
async def api_app(tmp_path: Path) -> AsyncIterator[Any]:
    from cowrite.app import build_app
    from cowrite.config import load_app_settings

    settings = load_app_settings(
        environ={
            "COWRITE_AUTH_SECRET": SECRET,
            "COWRITE_CORS_ORIGINS": "http://localhost",
            "COWRITE_API_KEY": KEY,
        },
        server_overrides={"host": "127.0.0.1", "port": 0, "use_uvloop": False, "gc_freeze": False},
        store=f"sqlite:///{tmp_path}/cowrite.db",
        data_dir=str(tmp_path),
        dev_mode=False,
    )
    app = build_app(settings)
    await asyncio.wait_for(app.start(), 15.0)
    try:
        yield app
    finally:
        await asyncio.wait_for(app.stop(), 15.0)


@pytest.fixture
def api(api_app: Any, http: aiohttp.ClientSession) -> Api:
    return Api(http, f"http://127.0.0.1:{api_app.port}")
