"""Issue 3, opaque operations with binary parts (Yjs updates): delivered live and
read back from the store byte for byte, by both official clients, over WebSocket
and long-polling, with SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import Client, Server, join_and_catch_up, read_all, token, unique_doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ALL_BYTES = bytes(range(256))


def operations() -> dict[str, Any]:
    """clientOpId -> operation; every byte value, empty and nested parts, text around."""
    return {
        "py-1": {
            "type": "yjs-update",
            "update": ALL_BYTES,
            "parts": [b"", ALL_BYTES[::-1], {"deep": [b"\x00", b"\xff" * 3]}],
            "text": "é ✓ \u0000 not binary",
        },
        "node-1": {"type": "yjs-update", "update": ALL_BYTES * 4, "meta": {"n": 1, "x": None}},
        "node-2": ALL_BYTES,  # a bare binary operation
        "py-2": [ALL_BYTES, "between", ALL_BYTES[128:]],
    }


async def test_binary_operations_byte_for_byte(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    py = await make_client("python", "alice", ["websocket"])
    node_poll = await make_client("node", "bob", ["polling"])
    node_ws = await make_client("node", "carol", ["websocket"])
    clients = [py, node_poll, node_ws]
    await py.connect_ok(server.url, token("alice"))
    assert (await py.call("join-document", doc))["role"] == "owner"
    for user in ("bob", "carol"):
        await py.call("share-document", {"documentId": doc, "userId": user, "role": "editor"})
    await node_poll.connect_ok(server.url, token("bob"))
    await node_ws.connect_ok(server.url, token("carol"))
    for client in (node_poll, node_ws):
        assert (await client.call("join-document", doc))["ok"]

    ops = operations()
    senders = {"py-1": py, "node-1": node_poll, "node-2": node_ws, "py-2": py}
    for seq, (client_op_id, operation) in enumerate(ops.items(), 1):
        sender = senders[client_op_id]
        ack = await sender.call(
            "edit-operation",
            {"documentId": doc, "operation": operation, "clientOpId": client_op_id},
        )
        assert ack == {"ok": True, "documentId": doc, "seq": seq}, ack
        for client in clients:
            if client is sender:
                continue
            edits = await client.wait_for(
                "remote-edit", len([c for c in list(ops)[:seq] if senders[c] is not client])
            )
            assert edits[-1] == {
                "documentId": doc,
                "userId": sender.label,
                "operation": operation,
                "seq": seq,
                "clientOpId": client_op_id,
            }, f"{client!r} received {client_op_id} altered"

    expected = [(seq, cid, op) for seq, (cid, op) in enumerate(ops.items(), 1)]
    # Read back from the store by every client: join catch-up and sync pages.
    for client in clients:
        got = [(o["seq"], o["clientOpId"], o["operation"]) for o in await read_all(client, doc, 3)]
        assert got == expected, f"{client!r}: sync returned altered operations"
    late = await make_client("node", "bob-late", ["websocket"])
    await late.connect_ok(server.url, token("bob"))
    _, caught_up = await join_and_catch_up(late, doc)
    assert [(o["seq"], o["clientOpId"], o["operation"]) for o in caught_up] == expected
    await asyncio.sleep(0)
