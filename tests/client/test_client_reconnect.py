"""Reconnection against a live server: a dropped transport and a server restart
(same port, same SQLite file) in the middle of a burst of submissions, and the
``server-draining`` delay.  Afterwards every submitted operation is stored
exactly once and every client has the whole sequence, in order, once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from client_support import WAIT, LiveServer, eventually

from cowrite.client import CowriteClient, DocumentSession, Operation

BURST = 150  # below the server's edit burst allowance (200)


async def opened(client: CowriteClient, doc: str) -> DocumentSession:
    await asyncio.wait_for(client.connect(), WAIT)
    return await asyncio.wait_for(client.open(doc), WAIT)


async def burst_with_interruption(
    make_client: Callable[..., CowriteClient],
    doc_id: str,
    interrupt: Callable[[CowriteClient, CowriteClient], Awaitable[None]],
) -> tuple[CowriteClient, CowriteClient]:
    alice_client, bob_client = make_client("alice"), make_client("bob")
    alice = await opened(alice_client, doc_id)
    await alice.share("bob", "viewer")
    bob = await opened(bob_client, doc_id)
    seen: list[Operation] = []
    bob.on_operation(seen.append)

    submits = [asyncio.ensure_future(alice.submit({"i": i})) for i in range(BURST)]
    await eventually(lambda: alice.last_seq >= 20, what="the burst under way")
    assert alice.pending > 0, "the burst finished before the interruption"
    await interrupt(alice_client, bob_client)
    seqs = await asyncio.wait_for(asyncio.gather(*submits), 20)

    # Each submission got its own seq, and together they are the whole log.
    assert sorted(seqs) == list(range(1, BURST + 1))
    await eventually(lambda: bob.last_seq == BURST, what="bob caught up")
    assert [op.seq for op in seen] == list(range(1, BURST + 1)), "bob: not each op once, in order"
    assert [op.operation for op in sorted(seen, key=lambda op: seqs.index(op.seq))] == [
        {"i": i} for i in range(BURST)
    ]
    assert alice.last_seq == BURST and alice.pending == 0

    # What the server stored: each clientOpId exactly once.
    stored: list[Operation] = []
    check = make_client("alice")
    await opened(check, doc_id)
    check.documents[doc_id].on_operation(stored.append)
    ids = [op.client_op_id for op in stored]
    assert len(stored) == BURST and len(set(ids)) == BURST
    assert all(i is not None and i.startswith(alice_client.session_id) for i in ids)
    return alice_client, bob_client


async def test_dropped_transport_during_a_burst(
    make_client: Callable[..., CowriteClient],
) -> None:
    async def drop(alice: CowriteClient, bob: CowriteClient) -> None:
        alice.drop_connection()
        await asyncio.sleep(0.05)
        bob.drop_connection()  # bob misses live ops and must catch up from last_seq

    alice, bob = await burst_with_interruption(make_client, "drop", drop)
    await eventually(lambda: alice.metrics.connects == bob.metrics.connects == 2, what="both back")
    for client in (alice, bob):
        m = client.metrics
        assert m.disconnects == 1 and m.connects == 2 and len(m.reconnect_durations) == 1
        assert m.reconnect_durations[0] < 2.0  # ADR-003's target
        assert m.last_disconnect_at is not None and m.last_reconnect_at is not None
        assert m.last_reconnect_at >= m.last_disconnect_at
    # In flight when the connection dropped: resent, or found stored when catching up.
    m = alice.metrics
    assert m.submissions_resent + m.submissions_recovered > 0


async def test_server_restart_during_a_burst(
    server: LiveServer, make_client: Callable[..., CowriteClient]
) -> None:
    port = server.port

    async def restart(alice: CowriteClient, bob: CowriteClient) -> None:
        await server.stop()
        await asyncio.sleep(0.3)  # clients retry against a closed port meanwhile
        await server.start()
        assert server.port == port

    alice, bob = await burst_with_interruption(make_client, "restart", restart)
    for client in (alice, bob):
        assert client.metrics.drains == 1  # server-draining was received
        assert client.metrics.connects == 2
        assert client.metrics.last_disconnect_reason is not None


async def test_server_draining_delay_is_honoured_as_a_floor(
    server: LiveServer, make_client: Callable[..., CowriteClient]
) -> None:
    client = make_client("alice")
    await opened(client, "drain")
    [sid] = server.app.server.socket_ids()
    server.app.server.send(sid, "server-draining", {"reason": "test", "reconnectDelayMs": 700})
    await eventually(lambda: client.metrics.drains == 1, what="the notice")
    server.app.server.disconnect(sid)
    await eventually(lambda: len(client.metrics.reconnect_durations) == 1, what="reconnection")
    duration = client.metrics.reconnect_durations[0]
    base = client.settings.backoff_base
    assert 0.7 <= duration < 0.7 + base + 0.5, duration
    doc = client.documents["drain"]
    await eventually(lambda: doc.state.live, what="re-joined")
    assert await asyncio.wait_for(doc.submit("after"), WAIT) == 1


async def test_a_submission_lost_with_the_connection_is_resent(
    make_client: Callable[..., CowriteClient],
) -> None:
    client = make_client("alice")
    doc = await opened(client, "resend")
    submit = asyncio.ensure_future(doc.submit("lost"))
    await asyncio.sleep(0)  # queued on the socket, not yet written...
    [sub] = doc.state.pending.values()
    assert sub.sends == 1
    client.drop_connection()  # ...and gone with it
    assert await asyncio.wait_for(submit, WAIT) == 1
    assert sub.sends == 2 and client.metrics.submissions_resent == 1
    assert doc.last_seq == 1 and doc.pending == 0
