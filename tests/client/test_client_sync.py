"""Against a live server: catch-up over several pages, two editors, presence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from client_support import WAIT, eventually

from cowrite.client import CowriteClient, DocumentSession, Operation, PresenceChange


async def opened(client: CowriteClient, doc: str, **kw: Any) -> DocumentSession:
    if not client.connected:
        await asyncio.wait_for(client.connect(), WAIT)
    return await asyncio.wait_for(client.open(doc, **kw), WAIT)


async def test_open_catches_up_across_pages(make_client: Callable[..., CowriteClient]) -> None:
    writer = await opened(make_client("alice"), "paged")
    count = 250  # the server's pages hold 100
    seqs = await asyncio.wait_for(
        asyncio.gather(*(writer.submit({"n": i}) for i in range(count))), 20
    )
    assert sorted(seqs) == list(range(1, count + 1))
    await writer.share("bob", "viewer")

    reader = await opened(make_client("bob"), "paged")
    assert (reader.role, reader.head, reader.last_seq) == ("viewer", count, count)
    got: list[Operation] = []
    async with asyncio.timeout(WAIT):
        async for op in reader.operations():  # the first consumer gets the catch-up
            got.append(op)
            if len(got) == count:
                break
    assert [op.seq for op in got] == list(range(1, count + 1))
    by_seq = {seq: i for i, seq in enumerate(seqs)}
    assert all(op.operation == {"n": by_seq[op.seq]} and op.user_id == "alice" for op in got)

    late: list[Operation] = []
    partial = await opened(make_client("bob"), "paged", since=200, on_operation=late.append)
    assert [op.seq for op in late] == list(range(201, count + 1))
    assert partial.last_seq == count


async def test_two_editors_see_each_other_in_order(
    make_client: Callable[..., CowriteClient],
) -> None:
    alice = await opened(make_client("alice"), "pair")
    await alice.share("bob", "editor")
    bob = await opened(make_client("bob"), "pair")
    seen: dict[str, list[Operation]] = {"alice": [], "bob": []}
    alice.on_operation(seen["alice"].append)
    bob.on_operation(seen["bob"].append)

    async def write(doc: DocumentSession, who: str, n: int) -> list[int]:
        seqs = []
        for i in range(n):
            seqs.append(await doc.submit({"by": who, "i": i}))
            if i % 10 == 9:
                await asyncio.sleep(0)  # interleave with the other editor
        return seqs

    own_a, own_b = await asyncio.wait_for(
        asyncio.gather(write(alice, "alice", 60), write(bob, "bob", 60)), 20
    )
    total = 120
    await eventually(lambda: alice.last_seq == total and bob.last_seq == total, what="caught up")
    for who, own, other in (("alice", own_a, own_b), ("bob", own_b, own_a)):
        remote = [op.seq for op in seen[who]]
        assert remote == sorted(other), f"{who} saw the other's ops out of order or not all"
        assert sorted(remote + own) == list(range(1, total + 1)), f"{who}: gaps or duplicates"
        assert all(op.operation["by"] != who for op in seen[who]), f"{who} got an own op back"


async def test_presence_roster_and_changes(make_client: Callable[..., CowriteClient]) -> None:
    alice = await opened(make_client("alice"), "roster")
    changes: list[PresenceChange] = []
    alice.on_presence(changes.append)
    await alice.share("bob", "viewer")
    bob = await opened(make_client("bob"), "roster")
    assert set(bob.presence) == {"alice", "bob"}
    await eventually(lambda: "bob" in alice.presence, what="bob joined")
    await asyncio.wait_for(bob.set_presence({"cursor": 7}), WAIT)
    await eventually(lambda: alice.presence["bob"].state == {"cursor": 7}, what="bob's state")
    await bob.close()
    await eventually(lambda: "bob" not in alice.presence, what="bob left")
    assert [c.kind for c in changes if c.user_id == "bob"] == ["joined", "state", "left"]
