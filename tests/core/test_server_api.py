"""ServerApi over two in-process instances (CollabService + MemoryHub): what
crosses instances, and the bound on waiting for instances that do not answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from collab_support import SECRET, RecordingGateway

from cowrite.auth import AuthSettings, TokenVerifier, mint_token
from cowrite.backends.broker_memory import MemoryBroker, MemoryHub
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.store_sqlite import SqliteStore
from cowrite.core.api import ApiError, ServerApi
from cowrite.core.service import CollabService

Node = tuple[CollabService, RecordingGateway]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    hub = MemoryHub()
    out: list[Node] = []
    stores = []
    for i in range(2):
        store = SqliteStore(tmp_path / "shared.sqlite")
        await store.open()
        stores.append(store)
        gateway = RecordingGateway()
        svc = CollabService(
            store=store,
            presence=MemoryPresence(),
            gateway=gateway,
            verifier=TokenVerifier(AuthSettings(secret=SECRET)),
            broker=MemoryBroker(hub, instance_id=f"i{i}"),
        )
        await svc.start()
        out.append((svc, gateway))
    yield out
    for svc, _ in out:
        await svc.stop()
    for store in stores:
        await store.close()


async def test_info_waits_a_bounded_time_for_instances_that_do_not_answer(
    nodes: list[Node],
) -> None:
    (a, _), (b, _) = nodes
    api = ServerApi(a, timeout=0.2)
    b.connect("sb", {"token": mint_token(AuthSettings(secret=SECRET), user_id="bob")})
    loop = asyncio.get_running_loop()
    started = loop.time()
    info = await api.info({})  # b has no ServerApi: it never answers
    assert loop.time() - started < 5.0
    assert (info["answered"], info["expected"]) == (1, 2)
    assert [i["instanceId"] for i in info["instances"]] == ["i0"]
    ServerApi(b)
    info = await api.info({})
    assert (info["answered"], info["expected"], info["connections"]) == (2, 2, 1)
    with pytest.raises(ApiError) as refused:
        await api.call("info", {"unexpected": 1})
    assert (refused.value.status, refused.value.code) == (400, "invalid_params")


async def test_disconnect_reaches_the_other_instance(nodes: list[Node]) -> None:
    (a, _), (b, gw_b) = nodes
    api, _ = ServerApi(a), ServerApi(b)
    for sid in ("s1", "s2"):
        b.connect(sid, {"token": mint_token(AuthSettings(secret=SECRET), user_id="bob")})
    b.connect("s3", {"token": mint_token(AuthSettings(secret=SECRET), user_id="carol")})
    result = await api.call("disconnect", {"userId": "bob", "code": "kicked"})
    assert result == {"userId": "bob", "disconnected": 0, "instancesNotified": 1}
    for _ in range(100):
        if "__disconnect__" in [e for e, _ in gw_b.sent.get("s2", [])]:
            break
        await asyncio.sleep(0.01)
    for sid in ("s1", "s2"):
        assert gw_b.sent[sid] == [
            ("server-disconnect", ({"code": "kicked", "reason": "disconnected by the server"},)),
            ("__disconnect__", ()),
        ]
    assert "s3" not in gw_b.sent
