"""Connection-state recovery across an instance kill, through nginx.

Three ``cowrite serve --recovery`` instances over one PostgreSQL and one Redis
behind nginx (``deploy/nginx.conf``, ``ip_hash``).  Alice uses the official
socket.io-client (4.8.4), unmodified, with its own reconnection (polling
upgraded to WebSocket, the default), from an address nginx sends to the
instance that is then killed with SIGKILL: no goodbye, no last save of her
recovery record.  Bob, on another instance, keeps editing.  Alice's client
reconnects by itself, nginx sends it to a surviving instance, and it resumes:
``socket.recovered === true``, the same sid, the document back without
``join-document``, and every ``remote-edit`` of the log exactly once and in
order — those committed while she was away replayed from the log, the later
ones live.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from scaleout_cluster import WAIT, Cluster, addresses_by_instance, require_services, token
from tests.e2e.e2e_support import NodeClient, edit_times

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BEFORE, DURING, AFTER = 5, 10, 5  # bob's edits before the kill, right after it, after the resume
VICTIM = "i1"


@pytest.fixture
async def recovering_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    await require_services()
    cluster = Cluster(tmp_path, size=3, serve_args=["--recovery"])
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


def remote_edits(client: NodeClient) -> list[tuple[int, Any]]:
    return [
        (a[0]["seq"], a[1] if len(a) > 1 else None) for e, a in client.events if e == "remote-edit"
    ]


async def scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of an instance's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


async def test_resume_on_a_survivor_after_sigkill(recovering_cluster: Cluster) -> None:
    cluster = recovering_cluster
    subnets = await addresses_by_instance(cluster)
    others = [i for i in ("i2", "i3") if subnets[i]]
    assert subnets[VICTIM] and others, f"probed routes do not cover the instances: {subnets}"
    alice_ip, bob_ip = f"{subnets[VICTIM][0]}.1", f"{subnets[others[0]][0]}.1"
    doc = f"doc-{uuid.uuid4().hex[:8]}"

    alice = NodeClient("alice", ["polling", "websocket"])
    bob = NodeClient("bob", ["websocket"])
    await alice.start()
    await bob.start()
    try:
        state = await alice.command(
            "connect",
            url=cluster.url,
            transports=["polling", "websocket"],
            upgrade=True,
            auth={"token": token("alice", doc)},
            sourceIp=alice_ip,
            reconnection=True,
            reconnectionDelay=1000,  # bob's edits meanwhile are surely missed
        )
        assert state["connected"], state
        sid = state["id"]
        state = await bob.command(
            "connect",
            url=cluster.url,
            transports=["websocket"],
            auth={"token": token("bob", doc)},
            sourceIp=bob_ip,
        )
        assert state["connected"], state
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        assert (await bob.call("join-document", {"documentId": doc}))["ok"]
        assert cluster.sessions_by_client()[alice_ip] == {VICTIM}

        await edit_times(bob, doc, BEFORE)
        await alice.wait_until(lambda: len(remote_edits(alice)) == BEFORE, WAIT, "live edits")
        assert orjson.loads(remote_edits(alice)[-1][1]) == {doc: BEFORE}

        victim = cluster.by_id(VICTIM)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(victim.proc.wait(), WAIT)
        during = await edit_times(bob, doc, DURING)

        await alice.wait_until(lambda: bool(alice.of("$connect")[1:]), 2 * WAIT, "the resume")
        resumed = alice.of("$connect")[-1]
        assert resumed == {"id": sid, "recovered": True}, alice.of("$connect")
        await alice.wait_until(
            lambda: len(remote_edits(alice)) >= BEFORE + DURING, WAIT, "the missed edits"
        )
        after = await edit_times(bob, doc, AFTER)
        total = BEFORE + DURING + AFTER
        await alice.wait_until(lambda: len(remote_edits(alice)) >= total, WAIT, "live edits")
        await asyncio.sleep(0.2)
        seqs = [s for s, _ in remote_edits(alice)]
        assert seqs == list(range(1, total + 1)), seqs  # all, in order, once each
        assert during + after == list(range(BEFORE + 1, total + 1))
        assert [orjson.loads(o) for _, o in remote_edits(alice)] == [{doc: s} for s in seqs]
        # Still a member: her own edit is accepted without join-document.
        assert await edit_times(alice, doc, 1) == [total + 1]
        # nginx closes her WebSocket ("transport close"; a poll would fail: "transport error")
        assert alice.of("$disconnect") in (["transport close"], ["transport error"])
        served = cluster.sessions_by_client()[alice_ip]
        assert VICTIM in served and len(served) == 2, served
        survivor = cluster.by_id(next(iter(served - {VICTIM})))
        metrics = await scrape(survivor.url)
        assert metrics["cowrite_sessions_resumed_total"] == 1
        # What was committed while she was away came from the log.
        assert metrics["cowrite_operations_resumed_total"] >= 1
    finally:
        await alice.close()
        await bob.close()
