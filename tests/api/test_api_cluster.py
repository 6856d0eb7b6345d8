"""The server API across instances: two ``cowrite serve`` processes sharing
PostgreSQL and Redis (the scale-out suite's ``Cluster``, nginx in front, not
used here).  Calls go to instance A's API; the socket clients are on B.

- an operation published through A reaches a client of B as a ``remote-edit``;
- a role revoked through A removes the member on B at once;
- a disconnect through A cuts the user's connection on B, reason first;
- ``info`` on A gathers both instances.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from api_support import KEY, Api, Client, connect_client
from scaleout_cluster import SECRET, Cluster, require_services


@pytest.fixture
async def two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Cluster, Api, Api]]:
    await require_services()
    monkeypatch.setenv("COWRITE_API_KEY", KEY)  # the instances' environment
    cluster = Cluster(tmp_path, size=2)
    try:
        await cluster.start()
        a, b = cluster.instances
        yield cluster, Api(http, a.url), Api(http, b.url)
    finally:
        await cluster.stop()


async def test_publish_revoke_disconnect_and_info_across_instances(
    two: tuple[Cluster, Api, Api],
) -> None:
    cluster, api_a, api_b = two
    b_url = cluster.instances[1].url
    created = await api_a.ok("grant", {"documentId": "doc", "userId": "olga", "role": "owner"})
    assert created["created"] is True
    await api_a.ok("grant", {"documentId": "doc", "userId": "bob", "role": "editor"})
    bob: Client = await connect_client(b_url, "bob", SECRET)
    carol: Client = await connect_client(b_url, "carol", SECRET)
    try:
        join = await bob.sio.call("join-document", {"documentId": "doc"}, timeout=5)
        assert join["ok"] and join["role"] == "editor"

        # publish on A -> remote-edit on B, and the same log on both APIs
        params = {"documentId": "doc", "userId": "svc", "operation": ["i", 0, "hi"]}
        first = await api_a.ok("publish", {**params, "clientOpId": "svc-1"})
        assert first["seq"] == 1
        again = await api_b.ok("publish", {**params, "clientOpId": "svc-1"})  # idempotent anywhere
        assert again == {"documentId": "doc", "seq": 1, "duplicate": True}
        await bob.wait_for(lambda: bool(bob.got("remote-edit")), "the published operation on B")
        assert bob.got("remote-edit") == [
            {
                "documentId": "doc",
                "seq": 1,
                "userId": "svc",
                "clientOpId": "svc-1",
                "operation": ["i", 0, "hi"],
            }
        ]
        assert (await api_b.ok("history", {"documentId": "doc"}))["ops"][0]["userId"] == "svc"

        # info on A: both instances answer; bob's document is open on B only
        info = await api_a.ok("info")
        assert (info["answered"], info["expected"], info["connections"]) == (2, 2, 2)
        by_id = {i["instanceId"]: i for i in info["instances"]}
        assert by_id["i2"]["documents"] == [{"documentId": "doc", "members": 1}]
        assert (by_id["i1"]["connections"], by_id["i2"]["connections"]) == (0, 2)
        roster = (await api_a.ok("presence", {"documentId": "doc"}))["presence"]
        assert [p["userId"] for p in roster] == ["bob"]

        # revoke on A -> bob is out of the document on B at once
        await api_a.ok("revoke", {"documentId": "doc", "userId": "bob"})
        await bob.wait_for(lambda: bool(bob.got("access-revoked")), "access-revoked on B")
        edit = {"documentId": "doc", "operation": 1, "clientOpId": "b1"}
        refused = await bob.sio.call("edit-operation", edit, timeout=5)
        assert refused["error"]["code"] == "not_joined"
        rejoin = await bob.sio.call("join-document", {"documentId": "doc"}, timeout=5)
        assert rejoin["error"]["code"] == "access_denied"

        # disconnect on A -> carol's connection on B is cut, with the reason
        result = await api_a.ok("disconnect", {"userId": "carol", "code": "banned", "reason": "x"})
        assert result == {"userId": "carol", "disconnected": 0, "instancesNotified": 1}
        await carol.wait_for(carol.disconnected.is_set, "carol's disconnect on B")
        assert carol.got("server-disconnect") == [{"code": "banned", "reason": "x"}]
        assert bob.sio.connected and not bob.disconnected.is_set()
    finally:
        for client in (bob, carol):
            if client.sio.connected:
                await client.sio.disconnect()
