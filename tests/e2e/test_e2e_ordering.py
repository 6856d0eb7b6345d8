"""Issue 3, the operation log seen by clients: concurrent editors all end with the
same gap-free sequence; a client cut off in a burst catches up with ``since`` and
its resent operations are stored once; acknowledged operations survive a
restart of the server.  Over SQLite and PostgreSQL, with both official clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import (
    Client,
    LogView,
    Server,
    check_log,
    join_and_catch_up,
    read_all,
    token,
    unique_doc,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LIVE_WAIT = 15.0  # bound for a whole burst to be delivered


def edit(doc: str, client_op_id: str, operation: Any) -> dict[str, Any]:
    return {"documentId": doc, "operation": operation, "clientOpId": client_op_id}


async def burst(client: Client, doc: str, prefix: str, count: int, start: int = 0) -> list[Any]:
    """``count`` edits sent back to back (all in flight together); their acks."""
    calls = [
        client.call("edit-operation", edit(doc, f"{prefix}-{i}", {"by": prefix, "i": i}), 10.0)
        for i in range(start, start + count)
    ]
    return list(await asyncio.gather(*calls))


def own_acks(view: LogView, acks: list[Any], prefix: str, start: int = 0) -> None:
    for i, ack in enumerate(acks, start):
        assert ack["ok"] is True and "duplicate" not in ack, ack
        view.add("ack", ack["seq"], f"{prefix}-{i}", {"by": prefix, "i": i})


def stored(ops: list[dict[str, Any]]) -> list[tuple[int, Any, Any]]:
    return [(op["seq"], op["clientOpId"], op["operation"]) for op in ops]


async def open_document(
    server: Server, owner: Client, others: list[Client], doc: str
) -> dict[str, dict[str, Any]]:
    """``owner`` creates ``doc`` and makes the ``others`` editors; everyone joins."""
    acks = {}
    await owner.connect_ok(server.url, token(owner.label))
    acks[owner.label] = await owner.call("join-document", {"documentId": doc, "since": 0})
    assert acks[owner.label]["role"] == "owner", acks
    for other in others:
        ack = await owner.call(
            "share-document", {"documentId": doc, "userId": other.label, "role": "editor"}
        )
        assert ack["ok"], ack
        await other.connect_ok(server.url, token(other.label))
        acks[other.label] = await other.call("join-document", {"documentId": doc, "since": 0})
        assert acks[other.label]["role"] == "editor", acks
    return acks


# -- 3. concurrent editors ----------------------------------------------------------


async def test_three_concurrent_editors_see_one_sequence(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    per_client = 50
    total = 3 * per_client
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["polling"])
    carol = await make_client("node", "carol", ["polling", "websocket"])
    clients = [alice, bob, carol]
    joins = await open_document(server, alice, [bob, carol], doc)

    acks = await asyncio.gather(*(burst(c, doc, c.label, per_client) for c in clients))

    views = {}
    for client, client_acks in zip(clients, acks, strict=True):
        view = LogView(doc)
        view.add_ops("join", joins[client.label]["ops"])
        own_acks(view, client_acks, client.label)
        await client.wait_until(
            lambda c=client: (
                len([e for e in c.of("remote-edit") if e["documentId"] == doc])
                >= total - per_client
            ),
            LIVE_WAIT,
            "every other client's operations",
        )
        view.add_remote_edits(client)
        check_log(view, total, repr(client))
        views[client.label] = view
    await asyncio.sleep(0.2)  # nothing more may arrive
    for client in clients:
        assert len(client.of("remote-edit")) == total - per_client, f"{client!r} got extra edits"
        assert all(e["userId"] != client.label for e in client.of("remote-edit")), (
            f"{client!r} received its own operations back"
        )

    # Everyone holds the same log, and it is the stored one.
    log = stored(await read_all(bob, doc))
    assert [seq for seq, _, _ in log] == list(range(1, total + 1))
    for label, view in views.items():
        assert view.as_list() == log, f"{label}'s log differs from the stored one"
    ids = [cid for _, cid, _ in log]
    assert sorted(ids) == sorted(f"{c.label}-{i}" for c in clients for i in range(per_client))
    # A late joiner reads the same log in pages.
    dave = await make_client("python", "dave", ["polling"])
    await alice.call("share-document", {"documentId": doc, "userId": "dave", "role": "viewer"})
    await dave.connect_ok(server.url, token("dave"))
    ack, ops = await join_and_catch_up(dave, doc)
    assert ack["head"] == total and stored(ops) == log


# -- 4. cut off in the middle of a burst ---------------------------------------------


@pytest.mark.parametrize("victim_kind", ["python", "node"])
async def test_client_cut_off_mid_burst_catches_up_and_resends_once(
    server: Server, make_client: Callable[..., Awaitable[Client]], victim_kind: str
) -> None:
    doc = unique_doc()
    other_kind = "node" if victim_kind == "python" else "python"
    alice = await make_client(other_kind, "alice", ["websocket"])
    victim = await make_client(victim_kind, "victor", ["websocket"])
    joins = await open_document(server, alice, [victim], doc)
    view = LogView(doc)
    view.add_ops("join", joins["victor"]["ops"])

    # Warm-up: 10 each, acknowledged.
    warm_alice, warm_victim = await asyncio.gather(
        burst(alice, doc, "alice", 10), burst(victim, doc, "victor", 10)
    )
    own_acks(view, warm_victim, "victor")
    alice_n, victim_n = 30, 20

    # alice edits one by one while the victim fires a burst and is cut off in it.
    async def alice_edits() -> list[Any]:
        acks = []
        for i in range(10, 10 + alice_n):
            acks.append(
                await alice.call("edit-operation", edit(doc, f"alice-{i}", {"by": "alice", "i": i}))
            )
            await asyncio.sleep(0.005)
        return acks

    alice_task = asyncio.create_task(alice_edits())
    await alice.wait_until(lambda: len(alice.of("remote-edit")) >= 10, 5.0)
    # The burst: one edit every 2 ms, the transport killed right after the 12th is
    # sent, so the first are acknowledged, the last sent ones are in flight (stored
    # or not, unacknowledged) and the rest never leave the client.
    calls: dict[int, asyncio.Task[Any]] = {}
    for i in range(10, 10 + victim_n):
        calls[i] = asyncio.create_task(
            victim.call("edit-operation", edit(doc, f"victor-{i}", {"by": "victor", "i": i}), 3.0)
        )
        if len(calls) == 12:
            break
        await asyncio.sleep(0.002)
    await asyncio.sleep(0)
    await victim.kill()
    cut_at = len(victim.events)
    await asyncio.wait(calls.values(), timeout=0.5)
    acked: dict[int, int] = {}
    for i, task in calls.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            ack = task.result()
            assert ack["ok"] is True, ack
            acked[i] = ack["seq"]
        else:
            task.cancel()
    await asyncio.gather(*calls.values(), return_exceptions=True)
    for i, seq in acked.items():
        view.add("ack", seq, f"victor-{i}", {"by": "victor", "i": i})
    view.add_remote_edits(victim)
    del victim.events[cut_at:]
    seen = set(view.entries)
    since = view.head
    assert seen == set(range(1, since + 1)), (
        f"before the cut the victim saw {sorted(seen)}: not a gap-free prefix"
    )

    # Reconnect (a new connection, same user), join with since, resend the unacked.
    await victim.connect_ok(server.url, token("victor"))
    rejoin_at = len(victim.events)
    ack, ops = await join_and_catch_up(victim, doc, since=since, limit=7)
    assert ack["role"] == "editor", ack
    assert all(op["seq"] > since for op in ops), "catch-up repeated operations the client had"
    view.add_ops("catch-up", ops)
    unacked = [i for i in range(10, 10 + victim_n) if i not in acked]
    resent = await asyncio.gather(
        *(
            victim.call("edit-operation", edit(doc, f"victor-{i}", {"by": "victor", "i": i}))
            for i in unacked
        )
    )
    duplicates: list[tuple[int, dict[str, Any]]] = []
    for i, r in zip(unacked, resent, strict=True):
        assert r["ok"] is True, r
        if r.get("duplicate"):
            duplicates.append((i, r))
        else:
            view.add("ack", r["seq"], f"victor-{i}", {"by": "victor", "i": i})
    alice_acks = await asyncio.wait_for(alice_task, 20.0)
    total = 20 + alice_n + victim_n

    def have_all() -> bool:
        seqs = set(view.entries) | {
            a[0]["seq"] for e, a in victim.events[rejoin_at:] if e == "remote-edit"
        }
        return seqs >= set(range(1, total + 1))

    await victim.wait_until(have_all, LIVE_WAIT, "the whole log after reconnecting")
    view.add_remote_edits(victim, rejoin_at)
    check_log(view, total, f"{victim!r} after reconnecting")
    # A resend recognised as a duplicate got the original seq.  That operation
    # reached the client once: in the catch-up pages, or live (as a remote-edit
    # from its old connection) when its commit finished after the catch-up read.
    by_id = {cid: seq for seq, (cid, _) in view.entries.items()}
    for i, r in duplicates:
        assert by_id.get(f"victor-{i}") == r["seq"], (i, r, sorted(by_id.items()))

    # The store holds each clientOpId once, 1..total without gaps.
    log = stored(await read_all(alice, doc))
    assert [seq for seq, _, _ in log] == list(range(1, total + 1))
    ids = [cid for _, cid, _ in log]
    expected = {f"alice-{i}" for i in range(10 + alice_n)} | {
        f"victor-{i}" for i in range(10 + victim_n)
    }
    assert len(ids) == len(set(ids)) and set(ids) == expected, sorted(ids)
    assert view.as_list() == log
    # alice saw every operation of victor's once, whatever was resent.
    alice_view = LogView(doc)
    alice_view.add_ops("join", joins["alice"]["ops"])
    own_acks(alice_view, warm_alice, "alice")
    own_acks(alice_view, alice_acks, "alice", start=10)
    await alice.wait_until(
        lambda: len(alice.of("remote-edit")) >= 10 + victim_n, LIVE_WAIT, "victor's edits"
    )
    await asyncio.sleep(0.2)
    alice_view.add_remote_edits(alice)
    check_log(alice_view, total, f"{alice!r}")
    assert alice_view.as_list() == log
    print(
        f"{victim!r}: cut after {len(acked)} of {len(calls)} sent edits were acknowledged; "
        f"{duplicates} of {len(unacked)} resent were already stored"
    )


# -- 5. restart ------------------------------------------------------------------------


async def test_acked_operations_survive_a_restart(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["polling"])
    await open_document(server, alice, [bob], doc)
    a_acks, b_acks = await asyncio.gather(
        burst(alice, doc, "alice", 15), burst(bob, doc, "bob", 15)
    )
    acked: dict[int, tuple[str, Any]] = {}
    for prefix, acks in (("alice", a_acks), ("bob", b_acks)):
        for i, ack in enumerate(acks):
            acked[ack["seq"]] = (f"{prefix}-{i}", {"by": prefix, "i": i})
    assert sorted(acked) == list(range(1, 31))

    # Stop in the middle of a burst: what was acknowledged must be kept.
    calls: list[asyncio.Task[Any]] = []

    async def emitter() -> None:
        for i in range(15, 45):
            op = edit(doc, f"alice-{i}", {"by": "alice", "i": i})
            calls.append(asyncio.create_task(alice.call("edit-operation", op, 3.0)))
            await asyncio.sleep(0.001)

    emitting = asyncio.create_task(emitter())
    async with asyncio.timeout(5.0):
        while len(calls) < 10:
            await asyncio.sleep(0.001)
    await server.stop()
    await emitting
    await asyncio.wait(calls, timeout=1.0)
    for i, task in enumerate(calls, 15):
        if task.done() and not task.cancelled() and task.exception() is None:
            ack = task.result()
            if ack.get("ok"):
                acked[ack["seq"]] = (f"alice-{i}", {"by": "alice", "i": i})
        else:
            task.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    print(f"stopped with {len(acked) - 30} of {len(calls)} in-flight edits acknowledged")
    await alice.disconnect()
    await bob.disconnect()

    await server.start()
    await alice.connect_ok(server.url, token("alice"))
    await bob.connect_ok(server.url, token("bob"))
    ack, ops = await join_and_catch_up(alice, doc, limit=9)
    assert ack["role"] == "owner", ack
    assert (await bob.call("join-document", doc))["role"] == "editor"
    log = {seq: (cid, op) for seq, cid, op in stored(ops)}
    head = ack["head"]
    assert sorted(log) == list(range(1, head + 1)), f"gaps after restart: {sorted(log)}"
    lost = {seq: v for seq, v in acked.items() if log.get(seq) != v}
    assert not lost, f"acknowledged operations lost or changed by the restart: {lost}"
    ids = [cid for cid, _ in log.values()]
    assert len(ids) == len(set(ids)), ids

    # The sequence continues without a gap, and idempotency keys survived.
    a2, b2 = await asyncio.gather(burst(alice, doc, "alice-r", 10), burst(bob, doc, "bob-r", 10))
    new = sorted(a["seq"] for a in a2 + b2)
    assert new == list(range(head + 1, head + 21)), new
    seq1_id, seq1_op = log[1]
    again = await alice.call("edit-operation", edit(doc, seq1_id, seq1_op))
    assert again == {"ok": True, "documentId": doc, "seq": 1, "duplicate": True}
    final = stored(await read_all(bob, doc))
    assert [s for s, _, _ in final] == list(range(1, head + 21))
    # A second restart: same log.
    await alice.disconnect()
    await bob.disconnect()
    await server.restart()
    await bob.connect_ok(server.url, token("bob"))
    _, ops = await join_and_catch_up(bob, doc)
    assert stored(ops) == final


# -- catching up over several pages while others edit ----------------------------------


async def test_late_joiners_page_through_a_long_log_while_it_grows(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    """The join ack holds one page (``more``); the rest comes with ``sync`` while
    live edits go on: the boundary between pages and live ``remote-edit`` events
    has neither gaps nor duplicates."""
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["polling"])
    carol = await make_client("python", "carol", ["polling"])
    await open_document(server, alice, [], doc)
    for user in ("bob", "carol"):
        await alice.call("share-document", {"documentId": doc, "userId": user, "role": "viewer"})
    before, during = 230, 60
    for start in range(0, before, 50):
        acks = await burst(alice, doc, "alice", min(50, before - start), start)
        assert [a["seq"] for a in acks] == list(range(start + 1, start + 1 + len(acks)))

    async def alice_edits() -> None:
        for i in range(before, before + during):
            ack = await alice.call(
                "edit-operation", edit(doc, f"alice-{i}", {"by": "alice", "i": i})
            )
            assert ack["seq"] == i + 1, ack
            await asyncio.sleep(0.003)

    editing = asyncio.create_task(alice_edits())
    await asyncio.sleep(0.02)
    views = {}
    for client in (bob, carol):
        await client.connect_ok(server.url, token(client.label))
    joined = await asyncio.gather(*(join_and_catch_up(c, doc, limit=50) for c in (bob, carol)))
    for client, (ack, ops) in zip((bob, carol), joined, strict=True):
        assert ack["more"] is True and len(ack["ops"]) < before, "the join ack was not paged"
        view = LogView(doc)
        view.add_ops("catch-up", ops)
        views[client.label] = view
    await asyncio.wait_for(editing, 20.0)
    total = before + during
    log = stored(await read_all(alice, doc, 100))
    assert [seq for seq, _, _ in log] == list(range(1, total + 1))
    for client in (bob, carol):
        view = views[client.label]
        await client.wait_until(
            lambda c=client, v=views[client.label]: (
                set(v.entries) | {e["seq"] for e in c.of("remote-edit")} >= set(range(1, total + 1))
            ),
            LIVE_WAIT,
            "the whole log",
        )
        await asyncio.sleep(0.1)
        view.add_remote_edits(client)
        check_log(view, total, repr(client))
        assert view.as_list() == log
