"""A drain hands its users over in the shared presence (two instances, Redis).

SIGTERM's drain (``App.stop``) closes its sessions, then keeps its users in
the shared presence for ``presence_handover`` seconds before its goodbye: a
user who rejoins on another instance meanwhile never leaves the roster (the
others see neither ``user-left`` nor a second ``user-joined``), and one who
does not come back is announced as left once the hand-over is over.  The
clients are the official socket.io-client (4.8.4).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from e2e_support import WAIT, NodeClient, Server, StoreSpec, token, two_instances, unique_doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_drained_user_who_rejoins_elsewhere_never_leaves_the_roster(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    one, two = await two_instances(servers, tmp_path, sqlite_spec, COWRITE_PRESENCE_HANDOVER="3")
    alice, carol, bob = (NodeClient(name, ["websocket"]) for name in ("alice", "carol", "bob"))
    for client in (alice, carol, bob):
        await client.start()
    try:
        doc = unique_doc()
        await alice.connect_ok(one.url, token("alice"))
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        for user in ("bob", "carol"):
            shared = {"documentId": doc, "userId": user, "role": "editor"}
            assert (await alice.call("share-document", shared))["ok"]
        await carol.connect_ok(one.url, token("carol"))
        assert (await carol.call("join-document", {"documentId": doc}))["ok"]
        await bob.connect_ok(two.url, token("bob"))
        joined = await bob.call("join-document", {"documentId": doc})
        assert {entry["userId"] for entry in joined["presence"]} == {"alice", "carol", "bob"}
        before = len(bob.events)

        stopping = asyncio.create_task(one.stop())  # SIGTERM's drain of "one"
        await alice.wait_for("$disconnect", timeout=WAIT)
        # alice comes back on the other instance during the hand-over; carol does not.
        await alice.connect_ok(two.url, token("alice"))
        rejoined = await alice.call("join-document", {"documentId": doc})
        assert {entry["userId"] for entry in rejoined["presence"]} == {"alice", "carol", "bob"}
        assert not stopping.done(), "the hand-over ended before alice was back"
        await asyncio.wait_for(stopping, 15)

        await bob.wait_until(
            lambda: any(ev == "user-left" for ev, _ in bob.events[before:]), WAIT, "carol leaves"
        )
        await asyncio.sleep(0.2)  # anything else would have come by now
        seen = [(ev, args[0]) for ev, args in bob.events[before:] if ev.startswith("user-")]
        assert seen == [("user-left", {"documentId": doc, "userId": "carol"})]
        roster = await bob.call("join-document", {"documentId": doc})
        assert {entry["userId"] for entry in roster["presence"]} == {"alice", "bob"}
    finally:
        for client in (alice, carol, bob):
            await client.close()
