"""Issue 3, permissions and the edit errors: owner on first join, access denied,
viewers read only, sharing, revocation; over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from e2e_support import Client, Server, token, unique_doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUIET = 0.3  # seconds to wait for an event that must not come


async def test_access_denied_viewer_share_and_revoke(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["websocket"])
    await alice.connect_ok(server.url, token("alice", "Alice"))
    await bob.connect_ok(server.url, token("bob", "Bob"))

    # First joiner of a new document owns it (payload as a bare string).
    ack = await alice.call("join-document", doc)
    assert ack["ok"] is True, ack
    assert (ack["documentId"], ack["role"], ack["head"], ack["ops"], ack["more"]) == (
        doc,
        "owner",
        0,
        [],
        False,
    )
    assert [p["userId"] for p in ack["presence"]] == ["alice"]

    # No permission: ack access_denied AND an "error" event.
    ack = await bob.call("join-document", {"documentId": doc, "since": 0})
    assert ack["ok"] is False and ack["error"]["code"] == "access_denied", ack
    await bob.wait_for("error")
    assert bob.of("error") == ["Access denied"]
    # bob is not in the room: alice's edits do not reach him.
    ack = await alice.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 1}, "clientOpId": "a1"}
    )
    assert ack == {"ok": True, "documentId": doc, "seq": 1}
    # Only an owner shares.
    ack = await bob.call("share-document", {"documentId": doc, "userId": "bob", "role": "editor"})
    assert ack["ok"] is False, ack
    ack = await bob.call("share-document", {"documentId": doc, "userId": "carol", "role": "editor"})
    assert ack["ok"] is False and ack["error"]["code"] == "access_denied", ack

    # Viewer: can join and read, cannot edit.
    ack = await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "viewer"})
    assert ack == {"ok": True, "documentId": doc, "userId": "bob", "role": "viewer"}
    ack = await bob.call("join-document", {"documentId": doc, "since": 0})
    assert ack["ok"] is True and ack["role"] == "viewer", ack
    assert [(op["seq"], op["clientOpId"], op["operation"]) for op in ack["ops"]] == [
        (1, "a1", {"i": 1})
    ]
    assert ack["ops"][0]["userId"] == "alice"
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 2}, "clientOpId": "b1"}
    )
    assert ack["ok"] is False and ack["error"]["code"] == "read_only", ack

    # Upgraded to editor while connected: the edit works at once.
    ack = await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "editor"})
    assert ack["ok"] is True, ack
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 2}, "clientOpId": "b1"}
    )
    assert ack == {"ok": True, "documentId": doc, "seq": 2}
    await alice.wait_for("remote-edit")
    assert alice.of("remote-edit") == [
        {"documentId": doc, "userId": "bob", "operation": {"i": 2}, "seq": 2, "clientOpId": "b1"}
    ]
    # Others' edits reach bob live; his own never come back to him.
    ack = await alice.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 3}, "clientOpId": "a2"}
    )
    assert ack["seq"] == 3
    await bob.wait_for("remote-edit")
    await asyncio.sleep(QUIET)
    assert bob.of("remote-edit") == [
        {"documentId": doc, "userId": "alice", "operation": {"i": 3}, "seq": 3, "clientOpId": "a2"}
    ]
    # The same clientOpId from another user is another operation.
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 4}, "clientOpId": "a2"}
    )
    assert ack == {"ok": True, "documentId": doc, "seq": 4}

    # Downgraded to viewer while connected: read only at once.
    ack = await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "viewer"})
    assert ack["ok"] is True, ack
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": {"i": 5}, "clientOpId": "b5"}
    )
    assert ack["ok"] is False and ack["error"]["code"] == "read_only", ack
    page = await bob.call("sync", {"documentId": doc, "since": 0, "limit": 100})
    assert [(o["seq"], o["userId"], o["clientOpId"]) for o in page["ops"]] == [
        (1, "alice", "a1"),
        (2, "bob", "b1"),
        (3, "alice", "a2"),
        (4, "bob", "a2"),
    ]


async def test_edit_errors_and_idempotent_resend(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["polling"])
    await alice.connect_ok(server.url, token("alice"))
    await bob.connect_ok(server.url, token("bob"))
    assert (await alice.call("join-document", doc))["role"] == "owner"
    await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "editor"})
    assert (await bob.call("join-document", doc))["role"] == "editor"

    async def code(client: Client, payload: object) -> str | None:
        ack = await client.call("edit-operation", payload)
        assert ack["ok"] is False, ack
        return ack["error"]["code"]  # type: ignore[no-any-return]

    other = unique_doc("not-joined")
    assert (
        await code(alice, {"documentId": other, "operation": {}, "clientOpId": "x"}) == "not_joined"
    )
    assert await code(bob, {"documentId": doc, "clientOpId": "x"}) == "invalid_payload"
    assert await code(bob, "just a string") == "invalid_payload"
    assert (
        await code(bob, {"documentId": doc, "operation": 1, "clientOpId": ["x"]})
        == "invalid_payload"
    )
    assert (
        await code(bob, {"documentId": 7, "operation": 1, "clientOpId": "x"}) == "invalid_payload"
    )
    big = "x" * (64 * 1024 + 1)
    for client in (alice, bob):
        assert await code(client, {"documentId": doc, "operation": big, "clientOpId": "big"}) == (
            "payload_too_large"
        )
    big_binary = {"blob": b"\x01" * (64 * 1024 + 1)}
    assert await code(alice, {"documentId": doc, "operation": big_binary, "clientOpId": "bb"}) == (
        "payload_too_large"
    )
    # Just under the limit is accepted (the limit is on the encoded operation).
    fits = "y" * (60 * 1024)
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": fits, "clientOpId": "fits"}
    )
    assert ack == {"ok": True, "documentId": doc, "seq": 1}

    # A resend of the same clientOpId: the original seq, duplicate, no second broadcast.
    op = {"documentId": doc, "operation": {"insert": "hello"}, "clientOpId": "b-2"}
    first = await bob.call("edit-operation", op)
    assert first == {"ok": True, "documentId": doc, "seq": 2}
    again = await bob.call("edit-operation", op)
    assert again == {"ok": True, "documentId": doc, "seq": 2, "duplicate": True}
    third = await bob.call("edit-operation", {**op, "operation": {"insert": "changed"}})
    assert third["seq"] == 2 and third.get("duplicate") is True, third
    await alice.wait_for("remote-edit", 2)
    await asyncio.sleep(QUIET)
    assert [e["seq"] for e in alice.of("remote-edit")] == [1, 2], alice.of("remote-edit")
    page = await alice.call("sync", {"documentId": doc, "since": 0, "limit": 10})
    assert [(o["seq"], o["clientOpId"]) for o in page["ops"]] == [(1, "fits"), (2, "b-2")]
    assert page["ops"][1]["operation"] == {"insert": "hello"}
    assert not bob.of("remote-edit"), "the sender received its own operation"


async def test_revoke_removes_the_user(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    alice = await make_client("node", "alice", ["websocket"])
    bob = await make_client("python", "bob", ["polling"])
    bob2 = await make_client("node", "bob-tab-2", ["polling"])
    await alice.connect_ok(server.url, token("alice"))
    await bob.connect_ok(server.url, token("bob"))
    await bob2.connect_ok(server.url, token("bob"))
    assert (await alice.call("join-document", doc))["role"] == "owner"
    await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "editor"})
    assert (await bob.call("join-document", doc))["ok"]
    assert (await bob2.call("join-document", doc))["ok"]
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": "b", "clientOpId": "b1"}
    )
    assert ack["seq"] == 1

    ack = await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": None})
    assert ack == {"ok": True, "documentId": doc, "userId": "bob", "role": None}
    for tab in (bob, bob2):
        await tab.wait_for("access-revoked")
        assert tab.of("access-revoked") == [{"documentId": doc}]
        assert "Access denied" in tab.of("error")
    # Both of bob's connections left the room: one user-left for alice.
    await alice.wait_for("user-left")
    # Removed from the room: no more edits reach him, and he cannot edit or sync.
    ack = await alice.call(
        "edit-operation", {"documentId": doc, "operation": "a", "clientOpId": "a1"}
    )
    assert ack["seq"] == 2
    ack = await bob.call(
        "edit-operation", {"documentId": doc, "operation": "b2", "clientOpId": "b2"}
    )
    assert ack["ok"] is False and ack["error"]["code"] in {"not_joined", "access_denied"}, ack
    ack = await bob2.call("sync", {"documentId": doc, "since": 0})
    assert ack["ok"] is False, ack
    ack = await bob.call("join-document", doc)
    assert ack["ok"] is False and ack["error"]["code"] == "access_denied", ack
    await asyncio.sleep(QUIET)
    assert not bob.of("remote-edit")
    # bob's other tab saw his edit (only the sending connection is skipped), not alice's.
    assert [e["seq"] for e in bob2.of("remote-edit")] == [1]
    assert alice.of("user-left") == [{"documentId": doc, "userId": "bob"}]


async def test_operation_size_limit_boundary(
    sqlite_server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    """``payload_too_large`` is for an operation of more than 64 KiB encoded (JSON):
    exactly 64 KiB is accepted, one byte more is not."""
    doc = unique_doc()
    alice = await make_client("node", "alice", ["websocket"])
    await alice.connect_ok(sqlite_server.url, token("alice"))
    await alice.call("join-document", doc)
    limit = 64 * 1024
    at_limit = "x" * (limit - 2)  # JSON: the quotes and the characters, 65536 bytes
    ack = await alice.call(
        "edit-operation", {"documentId": doc, "operation": at_limit, "clientOpId": "a"}
    )
    assert ack == {"ok": True, "documentId": doc, "seq": 1}, (
        f"an operation of exactly {limit} bytes of JSON was refused: {ack}"
    )
    over = "x" * (limit - 1)
    ack = await alice.call(
        "edit-operation", {"documentId": doc, "operation": over, "clientOpId": "b"}
    )
    assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large", ack


async def test_racing_first_joiners_one_owner(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    """Two users join the same new documents at once: exactly one owns each."""
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["websocket"])
    await alice.connect_ok(server.url, token("alice"))
    await bob.connect_ok(server.url, token("bob"))
    docs = [unique_doc("race") for _ in range(8)]
    acks = await asyncio.gather(
        *(client.call("join-document", doc) for doc in docs for client in (alice, bob))
    )
    for i, doc in enumerate(docs):
        a, b = acks[2 * i], acks[2 * i + 1]
        outcomes = sorted(
            [a.get("role") or a["error"]["code"], b.get("role") or b["error"]["code"]]
        )
        assert outcomes == ["access_denied", "owner"], (doc, a, b)
