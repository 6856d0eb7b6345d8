"""Issue 3, presence: the roster in the join ack, ``user-joined``/``user-left`` once
per user however many tabs, and coalesced ``presence`` updates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from e2e_support import Client, Server, token, unique_doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUIET = 0.3  # seconds to wait for an event that must not come


def user_ids(roster: list[dict[str, object]]) -> list[object]:
    return sorted(entry["userId"] for entry in roster)


async def test_roster_joined_left_and_multi_tab(
    sqlite_server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    url = sqlite_server.url
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    tab1 = await make_client("node", "bob-tab-1", ["polling"])
    tab2 = await make_client("python", "bob-tab-2", ["polling"])
    carol = await make_client("node", "carol", ["websocket"])
    await alice.connect_ok(url, token("alice", "Alice"))
    ack = await alice.call("join-document", doc)
    assert ack["presence"] == [{"userId": "alice", "name": "Alice", "state": None}], ack
    for user in ("bob", "carol"):
        await alice.call("share-document", {"documentId": doc, "userId": user, "role": "editor"})

    # bob's first tab: a user-joined for alice, the roster for bob.
    await tab1.connect_ok(url, token("bob", "Bob"))
    ack = await tab1.call("join-document", {"documentId": doc})
    assert user_ids(ack["presence"]) == ["alice", "bob"], ack
    await alice.wait_for("user-joined")
    assert alice.of("user-joined") == [{"documentId": doc, "userId": "bob", "name": "Bob"}]

    # bob's second tab: no second user-joined; bob is in the roster once.
    await tab2.connect_ok(url, token("bob", "Bob"))
    ack = await tab2.call("join-document", doc)
    assert user_ids(ack["presence"]) == ["alice", "bob"], ack["presence"]
    await asyncio.sleep(QUIET)
    assert len(alice.of("user-joined")) == 1, alice.of("user-joined")
    assert not tab1.of("user-joined"), tab1.of("user-joined")

    # carol joins: everyone already there hears of it, once per connection.
    await carol.connect_ok(url, token("carol", "Carol"))
    ack = await carol.call("join-document", doc)
    assert user_ids(ack["presence"]) == ["alice", "bob", "carol"], ack["presence"]
    for client in (alice, tab1, tab2):
        await client.wait_for("user-joined", 2 if client is alice else 1)
        assert client.of("user-joined")[-1] == {
            "documentId": doc,
            "userId": "carol",
            "name": "Carol",
        }

    # One of bob's tabs leaves: bob is still there.
    ack = await tab1.call("leave-document", {"documentId": doc})
    assert ack == {"ok": True, "documentId": doc}
    await asyncio.sleep(QUIET)
    assert not alice.of("user-left") and not carol.of("user-left")
    ack = await carol.call(
        "edit-operation", {"documentId": doc, "operation": "c", "clientOpId": "c1"}
    )
    assert ack["seq"] == 1, ack
    await tab2.wait_for("remote-edit")
    assert not tab1.of("remote-edit"), "a tab that left still receives edits"
    # The other tab disconnects: now bob has left, once.
    await tab2.disconnect()
    await alice.wait_for("user-left")
    await carol.wait_for("user-left")
    await asyncio.sleep(QUIET)
    for client in (alice, carol):
        assert client.of("user-left") == [{"documentId": doc, "userId": "bob"}]
    assert not tab1.of("user-left"), "a tab that left still receives the room's events"

    # carol leaves with leave-document, then comes back: user-left, then user-joined.
    await carol.call("leave-document", doc)
    await alice.wait_for("user-left", 2)
    assert alice.of("user-left")[-1] == {"documentId": doc, "userId": "carol"}
    await carol.call("join-document", doc)
    await alice.wait_for("user-joined", 3)
    assert alice.of("user-joined")[-1]["userId"] == "carol"
    # And a disconnect of a single-tab user counts as leaving.
    await carol.kill()
    await alice.wait_for("user-left", 3)
    assert alice.of("user-left")[-1] == {"documentId": doc, "userId": "carol"}


@pytest.mark.parametrize(("sender_kind", "receiver_kind"), [("python", "node"), ("node", "python")])
async def test_presence_updates_are_coalesced(
    sqlite_server: Server,
    make_client: Callable[..., Awaitable[Client]],
    sender_kind: str,
    receiver_kind: str,
) -> None:
    url = sqlite_server.url
    doc = unique_doc()
    sender = await make_client(sender_kind, "sam", ["websocket"])
    receiver = await make_client(receiver_kind, "rita", ["polling"])
    await sender.connect_ok(url, token("sam", "Sam"))
    assert (await sender.call("join-document", doc))["role"] == "owner"
    await sender.call("share-document", {"documentId": doc, "userId": "rita", "role": "viewer"})
    await receiver.connect_ok(url, token("rita", "Rita"))
    await receiver.call("join-document", doc)

    ack = await receiver.call("presence-update", {"documentId": unique_doc(), "state": {}})
    assert ack["ok"] is False and ack["error"]["code"] == "not_joined", ack

    updates = 50
    acks = await asyncio.gather(
        *(
            sender.call("presence-update", {"documentId": doc, "state": {"cursor": i}})
            for i in range(updates)
        )
    )
    assert all(a == {"ok": True} for a in acks), acks
    last = {"documentId": doc, "userId": "sam", "state": {"cursor": updates - 1}}
    await receiver.wait_until(lambda: last in receiver.of("presence"), 5.0, "the last state")
    await asyncio.sleep(QUIET)
    received = receiver.of("presence")
    assert received[-1] == last, received
    assert 1 <= len(received) <= 10, f"{len(received)} presence events for {updates} updates"
    assert all(p["userId"] == "sam" and p["documentId"] == doc for p in received)
    cursors = [p["state"]["cursor"] for p in received]
    assert cursors == sorted(cursors), cursors
    assert not sender.of("presence"), "the sender received its own presence"

    # The roster given to a later joiner holds the latest state.
    late = await make_client("python", "sam-late", ["websocket"])
    await late.connect_ok(url, token("sam", "Sam"))
    ack = await late.call("join-document", doc)
    states = {p["userId"]: p["state"] for p in ack["presence"]}
    assert states == {"sam": {"cursor": updates - 1}, "rita": None}, ack["presence"]
