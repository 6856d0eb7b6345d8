"""Socket.IO connection-state recovery with the official socket.io-client (4.8.4).

The client is unmodified: it resumes by itself (``{pid, offset}`` in the auth
of its next CONNECT) and reports ``socket.recovered``.  The scenarios lose
the connection under the client (the transport is aborted: the server sees a
TCP close, "transport close"), let other users edit meanwhile, and then let
the same Socket object connect again, to the same instance or to another one
sharing Redis and the store.  The application never calls ``join-document``
again.  python-socketio's client does not implement recovery (no ``pid``), so
the Node client plays every resuming part.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_support import (
    WAIT,
    NodeClient,
    Server,
    StoreSpec,
    edit_times,
    token,
    two_instances,
    unique_doc,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def start(servers: list[Server], tmp_path: Path, spec: StoreSpec, **environ: str) -> Server:
    server = Server(
        spec, data_dir=str(tmp_path / "data"), environ={"COWRITE_RECOVERY": "1", **environ}
    )
    servers.append(server)
    return await server.start()


async def node(label: str) -> NodeClient:
    client = NodeClient(label, ["websocket"])
    await client.start()
    return client


async def connect_resumable(client: NodeClient, url: str, user: str) -> str:
    state = await client.command(
        "connect", url=url, transports=["websocket"], auth={"token": token(user)}
    )
    assert state["connected"], state
    return str(state["id"])


async def gone_from(server: Server, sid: str) -> None:
    async with asyncio.timeout(WAIT):
        while sid in server.app.service._conns:
            await asyncio.sleep(0.01)


async def alice_on_one_bob_on_two(
    one: Server, two: Server, alice: NodeClient, bob: NodeClient
) -> tuple[str, str]:
    """Alice (resumable, on one) owns a new document that bob (on two) edits
    too; both joined.  Returns the document and alice's sid."""
    doc = unique_doc()
    sid = await connect_resumable(alice, one.url, "alice")
    await connect_resumable(bob, two.url, "bob")
    assert (await alice.call("join-document", {"documentId": doc}))["ok"]
    shared_doc = {"documentId": doc, "userId": "bob", "role": "editor"}
    assert (await alice.call("share-document", shared_doc))["ok"]
    assert (await bob.call("join-document", {"documentId": doc}))["ok"]
    return doc, sid


def edits(client: NodeClient, start: int = 0) -> list[tuple[str, int, Any]]:
    """(document, seq, offset) of every ``remote-edit`` from ``client.events[start:]``."""
    return [
        (args[0]["documentId"], args[0]["seq"], args[1] if len(args) > 1 else None)
        for event, args in client.events[start:]
        if event == "remote-edit"
    ]


async def test_resumed_socket_gets_documents_and_missed_edits(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    server = await start(servers, tmp_path, sqlite_spec)
    alice, bob = await node("alice"), await node("bob")
    try:
        doc1, doc2 = unique_doc("one"), unique_doc("two")
        sid = await connect_resumable(alice, server.url, "alice")
        await connect_resumable(bob, server.url, "bob")
        for doc in (doc1, doc2):
            # alice creates (owns) them and shares them with bob
            assert (await alice.call("join-document", {"documentId": doc}))["ok"]
            shared = {"documentId": doc, "userId": "bob", "role": "editor"}
            assert (await alice.call("share-document", shared))["ok"]
            assert (await bob.call("join-document", {"documentId": doc}))["ok"]

        # Live: each remote-edit carries the socket's positions in both documents.
        await edit_times(bob, doc1, 2)
        await edit_times(bob, doc2, 1)
        await alice.wait_until(lambda: len(edits(alice)) == 3, WAIT, "3 live edits")
        live = edits(alice)
        assert [(d, s) for d, s, _ in live] == [(doc1, 1), (doc1, 2), (doc2, 1)]
        assert [orjson.loads(o) for _, _, o in live] == [
            {doc1: 1, doc2: 0},
            {doc1: 2, doc2: 0},
            {doc1: 2, doc2: 1},
        ]
        # alice's own edit is not sent back to her; her position moves past it.
        own = await edit_times(alice, doc2, 1)
        assert own == [2]

        # The connection is lost; bob edits both documents meanwhile.
        before = len(alice.events)
        await alice.command("kill")
        await gone_from(server, sid)
        missed1 = await edit_times(bob, doc1, 3)
        missed2 = await edit_times(bob, doc2, 2)

        state = await alice.command("reconnect")
        assert state["connected"] and state["recovered"] is True, state
        assert state["id"] == sid
        await alice.wait_until(lambda: len(edits(alice, before)) >= 5, WAIT, "the missed edits")
        got = edits(alice, before)
        assert [s for d, s, _ in got if d == doc1] == missed1
        assert [s for d, s, _ in got if d == doc2] == missed2  # not her own edit (2)
        assert len(got) == 5

        # The documents are hers again without join-document: live edits reach
        # her, her edits are accepted, and the server counts one resume.
        await edit_times(bob, doc1, 1)
        await alice.wait_until(lambda: len(edits(alice, before)) == 6, WAIT, "a live edit")
        assert edits(alice, before)[-1][:2] == (doc1, 6)
        assert await edit_times(alice, doc1, 1) == [7]
        assert server.app.service.resumed == 1
        await asyncio.sleep(0.1)
        assert len(edits(alice, before)) == 6  # nothing twice
    finally:
        await alice.close()
        await bob.close()


async def test_revoked_document_is_not_resumed(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    server = await start(servers, tmp_path, sqlite_spec)
    owner, guest = await node("owner"), await node("guest")
    try:
        kept, taken = unique_doc("kept"), unique_doc("taken")
        await connect_resumable(owner, server.url, "owner")
        sid = await connect_resumable(guest, server.url, "guest")
        for doc in (kept, taken):
            assert (await owner.call("join-document", {"documentId": doc}))["ok"]
            shared = {"documentId": doc, "userId": "guest", "role": "viewer"}
            assert (await owner.call("share-document", shared))["ok"]
            assert (await guest.call("join-document", {"documentId": doc}))["ok"]

        before = len(guest.events)
        await guest.command("kill")
        await gone_from(server, sid)
        revoke = {"documentId": taken, "userId": "guest", "role": None}
        assert (await owner.call("share-document", revoke))["ok"]
        await edit_times(owner, taken, 2)
        await edit_times(owner, kept, 2)

        state = await guest.command("reconnect")
        assert state["recovered"] is True, state
        await guest.wait_until(lambda: len(edits(guest, before)) >= 2, WAIT, "the kept edits")
        await asyncio.sleep(0.1)
        assert [(d, s) for d, s, _ in edits(guest, before)] == [(kept, 1), (kept, 2)]
        assert guest.of("access-revoked")[-1] == {"documentId": taken}
        sync = await guest.call("sync", {"documentId": taken, "since": 0})
        assert sync["ok"] is False and sync["error"]["code"] == "not_joined"
    finally:
        await owner.close()
        await guest.close()


async def test_not_resumed_after_a_deliberate_disconnect_or_with_another_token(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    server = await start(servers, tmp_path, sqlite_spec)
    alice = await node("alice")
    try:
        doc = unique_doc()
        sid = await connect_resumable(alice, server.url, "alice")
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        # A clean disconnect ends the socket: the record is discarded.
        await alice.command("disconnect")
        await gone_from(server, sid)
        state = await alice.command("reconnect")  # it still offers its pid
        assert state["connected"] and state["recovered"] is False
        assert state["id"] != sid
        assert server.app.service.resume_failed == {"unknown": 1}
        sync = await alice.call("sync", {"documentId": doc, "since": 0})
        assert sync["error"]["code"] == "not_joined"

        # The pid is bound to its user: offered with another user's token it
        # is refused: a new socket for that user, nothing of alice's.
        new_sid = state["id"]
        await alice.command("kill")
        await gone_from(server, new_sid)
        state = await alice.command("reconnect", auth={"token": token("mallory")})
        assert state["connected"] and state["recovered"] is False, state
        assert server.app.service.resume_failed == {"unknown": 1, "other_user": 1}
        sync = await alice.call("sync", {"documentId": doc, "since": 0})
        assert sync["error"]["code"] == "not_joined"
    finally:
        await alice.close()


async def test_resume_on_another_instance(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    one, two = await two_instances(servers, tmp_path, sqlite_spec, COWRITE_RECOVERY="1")
    alice, bob = await node("alice"), await node("bob")
    try:
        doc, sid = await alice_on_one_bob_on_two(one, two, alice, bob)
        await edit_times(bob, doc, 2)
        await alice.wait_until(lambda: len(edits(alice)) == 2, WAIT, "live edits")

        before = len(alice.events)
        await alice.command("kill")
        await gone_from(one, sid)
        missed = await edit_times(bob, doc, 4)
        # The same Socket object, now pointed at the other instance.
        state = await alice.command("reconnect", url=two.url)
        assert state["recovered"] is True and state["id"] == sid, state
        await alice.wait_until(lambda: len(edits(alice, before)) >= 4, WAIT, "missed edits")
        assert [s for _, s, _ in edits(alice, before)] == missed
        await edit_times(bob, doc, 1)
        await alice.wait_until(lambda: len(edits(alice, before)) == 5, WAIT, "a live edit")
        assert two.app.service.resumed == 1
    finally:
        await alice.close()
        await bob.close()


async def test_resume_after_a_drain_skips_own_edits(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    """A drained instance saves its sockets' exact positions on the way out:
    the edits alice made after the last remote-edit she received are not sent
    back to her (after a crash, the offset alone cannot know them)."""
    one, two = await two_instances(servers, tmp_path, sqlite_spec, COWRITE_RECOVERY="1")
    alice, bob = await node("alice"), await node("bob")
    try:
        doc, sid = await alice_on_one_bob_on_two(one, two, alice, bob)
        await edit_times(bob, doc, 1)
        await alice.wait_until(lambda: len(edits(alice)) == 1, WAIT, "a live edit")
        assert await edit_times(alice, doc, 2) == [2, 3]  # after her last offset ({doc: 1})

        before = len(alice.events)
        await one.stop()  # SIGTERM's drain
        assert alice.of("$disconnect") == ["transport close"]
        missed = await edit_times(bob, doc, 2)
        state = await alice.command("reconnect", url=two.url)
        assert state["recovered"] is True and state["id"] == sid, state
        await alice.wait_until(lambda: len(edits(alice, before)) >= 2, WAIT, "missed edits")
        await asyncio.sleep(0.1)
        assert [s for _, s, _ in edits(alice, before)] == missed == [4, 5]
    finally:
        await alice.close()
        await bob.close()


async def test_an_application_that_joins_again_anyway(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    """An application written before recovery joins again on every connect (as
    the demo page does): the join takes over from the resume, and from then
    on every operation arrives once, live."""
    server = await start(servers, tmp_path, sqlite_spec)
    alice, bob = await node("alice"), await node("bob")
    try:
        doc = unique_doc()
        sid = await connect_resumable(alice, server.url, "alice")
        await connect_resumable(bob, server.url, "bob")
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        shared = {"documentId": doc, "userId": "bob", "role": "editor"}
        assert (await alice.call("share-document", shared))["ok"]
        assert (await bob.call("join-document", {"documentId": doc}))["ok"]
        await edit_times(bob, doc, 2)
        await alice.wait_until(lambda: len(edits(alice)) == 2, WAIT, "live edits")

        await alice.command("kill")
        await gone_from(server, sid)
        await edit_times(bob, doc, 3)
        state = await alice.command("reconnect")
        assert state["recovered"] is True, state
        ack = await alice.call("join-document", {"documentId": doc, "since": 2})
        assert ack["ok"] and ack["head"] == 5
        seen = {op["seq"] for op in ack["ops"]} | {s for _, s, _ in edits(alice)}
        assert seen == {1, 2, 3, 4, 5}
        before = len(alice.events)
        await edit_times(bob, doc, 2)
        await alice.wait_until(lambda: len(edits(alice, before)) >= 2, WAIT, "live edits")
        await asyncio.sleep(0.1)
        assert [s for _, s, _ in edits(alice, before)] == [6, 7]
    finally:
        await alice.close()
        await bob.close()


async def test_not_resumed_after_the_window(
    servers: list[Server], tmp_path: Path, sqlite_spec: StoreSpec
) -> None:
    server = await start(servers, tmp_path, sqlite_spec, COWRITE_RECOVERY_WINDOW="1")
    alice = await node("alice")
    try:
        doc = unique_doc()
        sid = await connect_resumable(alice, server.url, "alice")
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        await alice.command("kill")
        await gone_from(server, sid)
        await asyncio.sleep(1.3)  # the lost socket's record lives 1 s
        state = await alice.command("reconnect")
        assert state["connected"] and state["recovered"] is False, state
        assert server.app.service.resume_failed == {"unknown": 1}
    finally:
        await alice.close()
