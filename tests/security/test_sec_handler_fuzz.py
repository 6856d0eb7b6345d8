"""The collaboration event handlers fuzzed through the official Python client.

Whatever the payload (any JSON, binary parts, wrong types, missing keys, huge
numbers, any Unicode), every event is acknowledged with ``{ok: true, ...}`` or
``{ok: false, error: {code, message}}`` (``code`` and ``message`` strings), and
nothing is logged at ERROR level (a handler that raised, an acknowledgement
that could not be encoded, a failed task).

``COWRITE_FUZZ_EXAMPLES`` sets the examples per test (default 200).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import PyClient
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sec_support import (
    WAIT,
    ErrorRecords,
    RawSio,
    Running,
    live_state,
    start_app,
    token,
    wait_state,
)

EXAMPLES = int(os.environ.get("COWRITE_FUZZ_EXAMPLES", "200"))
EVENTS = (
    "join-document",
    "leave-document",
    "edit-operation",
    "sync",
    "presence-update",
    "share-document",
)
DOC = "fz-doc"

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # No shrinking: an example that gets no ack waits seconds, and shrinking
    # replays it hundreds of times; the example is printed as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_ack(event: str, payload: Any, ack: Any) -> None:
    where = f"{event} {payload!r:.300} -> {ack!r:.300}"
    assert isinstance(ack, dict), where
    if ack.get("ok") is True:
        return
    assert ack.get("ok") is False, where
    err = ack.get("error")
    assert isinstance(err, dict), where
    assert isinstance(err.get("code"), str) and err["code"], where
    assert isinstance(err.get("message"), str), where


# -- payloads -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: sent as JSON numbers of any size
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=400),
    st.binary(max_size=64),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
document_ids = st.one_of(
    st.sampled_from([DOC, "other-doc", "", " ", "\x00", "a" * 256, "a" * 257, "doc\n"]),
    values,
)
# Keys each handler reads, with values of any type or absent.
fields = {
    "documentId": document_ids,
    "since": st.one_of(st.integers(min_value=-5, max_value=2**70), values),
    "limit": st.one_of(st.integers(min_value=-5, max_value=2**70), values),
    "operation": values,
    "clientOpId": st.one_of(st.text(max_size=200), st.integers(), values),
    "state": values,
    "userId": st.one_of(st.sampled_from(["fuzzer", "someone", ""]), values),
    "role": st.one_of(st.sampled_from(["owner", "editor", "viewer", "none", "admin"]), values),
}
shaped = st.fixed_dictionaries({}, optional={k: v for k, v in fields.items()}).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), values, max_size=2).map(lambda x: {**x, **d})
)


def binary_parts(value: Any) -> int:
    if isinstance(value, bytes):
        return 1
    if isinstance(value, list):
        return sum(binary_parts(v) for v in value)
    if isinstance(value, dict):
        return sum(binary_parts(v) for v in value.values())
    return 0


# Within the protocol's bounds (a packet with more than max_attachments binary
# parts closes the session, as socket.io-parser does: tested in the protocol fuzz).
# python-socketio sends ``call(event, None)`` as an event without arguments:
# that case (and null, and extra arguments) is test_any_number_of_arguments.
payloads = st.one_of(shaped, values).filter(lambda v: v is not None and binary_parts(v) <= 10)


@pytest.fixture
async def fuzzed(
    tmp_path: Path, error_log: ErrorRecords
) -> AsyncIterator[tuple[Running, PyClient]]:
    # Rate limits off: this test is about payloads (flooding is test_sec_flood.py).
    running = await start_app(tmp_path / "fz", collab={"edit_rate": 0, "presence_rate": 0})
    client = PyClient("fuzzer", ["websocket"])
    try:
        await client.connect_ok(running.url, token("fuzzer"))
        yield running, client
    finally:
        await client.close()
        await running.app.stop()


@fuzz_settings
@given(event=st.sampled_from(EVENTS), payload=payloads)
@example(event="edit-operation", payload={"documentId": DOC, "operation": 2**80})
@example(event="sync", payload={"documentId": DOC, "since": 2**63, "limit": 2**63})
@example(event="join-document", payload={"documentId": "big-since", "since": 2**63})
@example(event="presence-update", payload={"documentId": DOC, "state": b"\x00" * 5000})
@example(event="share-document", payload={"documentId": DOC, "userId": "fuzzer", "role": "viewer"})
async def test_every_event_is_acknowledged_well_formed(
    fuzzed: tuple[Running, PyClient], error_log: ErrorRecords, event: str, payload: Any
) -> None:
    _, client = fuzzed
    error_log.clear()  # each example answers for its own records
    join = await client.call("join-document", {"documentId": DOC})
    assert join["ok"], join
    ack = await client.call(event, payload)
    check_ack(event, payload, ack)
    error_log.check()
    # The connection still works after whatever was sent.
    again = await client.call("sync", {"documentId": DOC, "since": 0, "limit": 1})
    check_ack("sync", None, again)
    error_log.check()


@pytest.mark.parametrize("depth", [100, 250, 251, 252, 253, 254])
async def test_an_accepted_operation_can_be_delivered_and_read_back(
    make_app: Any, error_log: ErrorRecords, depth: int
) -> None:
    """An operation the server acknowledges must reach the other members and be
    readable by ``join-document`` and ``sync``; otherwise it must be refused
    up front (with an error code), not stored and then undeliverable."""
    running = await make_app()
    writer, reader, late = (PyClient(n, ["websocket"]) for n in ("writer", "reader", "late"))
    try:
        await writer.connect_ok(running.url, token("writer", docs=None))
        assert (await writer.call("join-document", {"documentId": DOC}))["ok"]
        for user in ("reader", "late"):
            ack = await writer.call(
                "share-document", {"documentId": DOC, "userId": user, "role": "editor"}
            )
            assert ack["ok"], ack
        await reader.connect_ok(running.url, token("reader"))
        assert (await reader.call("join-document", {"documentId": DOC}))["ok"]

        operation: Any = "leaf"
        for _ in range(depth):
            operation = [operation]
        ack = await writer.call(
            "edit-operation", {"documentId": DOC, "operation": operation, "clientOpId": "deep"}
        )
        check_ack("edit-operation", f"<operation nested {depth} deep>", ack)
        if ack["ok"]:
            await reader.wait_for("remote-edit", 1)
            assert reader.of("remote-edit")[0]["operation"] == operation
            await late.connect_ok(running.url, token("late"))
            joined = await late.call("join-document", {"documentId": DOC})
            assert joined["ok"] and joined["ops"][0]["operation"] == operation
            page = await late.call("sync", {"documentId": DOC, "since": 0})
            assert page["ok"] and page["ops"][0]["operation"] == operation
        error_log.check()
    finally:
        for client in (writer, reader, late):
            await client.close()


@pytest.mark.parametrize("event", EVENTS)
async def test_any_number_of_arguments_is_acknowledged(
    make_app: Any, error_log: ErrorRecords, event: str
) -> None:
    """``socket.emit("sync", cb)`` (no payload), ``emit("sync", null, cb)`` and
    ``emit("sync", a, b, cb)`` are all legal Socket.IO: each gets an error ack."""
    running = await make_app()
    sio = await RawSio.open(running.port)
    await sio.connect_ok("args")
    assert (await sio.call("join-document", {"documentId": DOC}))["ok"]
    for args in ((), (None,), ({"documentId": DOC}, "extra")):
        ack = await sio.call(event, *args)
        check_ack(event, args, ack)
    error_log.check()


async def test_a_join_cut_short_by_a_disconnect_leaves_no_room_behind(make_app: Any) -> None:
    """The client goes away while its ``join-document`` is still opening the
    document (store and broker round trips): nothing of that document may stay
    open on the server once both have finished."""
    running = await make_app()
    owner = await RawSio.open(running.port)
    await owner.connect_ok("racer")
    for i in range(100):  # the documents exist (no creation in the race below)
        doc = {"documentId": f"race-{i}"}
        assert (await owner.call("join-document", doc))["ok"]
        assert (await owner.call("leave-document", doc))["ok"]
    base = live_state(running)
    for i in range(100):
        sio = await RawSio.open(running.port)
        await sio.connect_ok("racer")
        sio.emit("join-document", {"documentId": f"race-{i}"})
        # Leave at a different point of the join each time (0 to ~2.5 ms).
        await asyncio.sleep(i * 0.000025)
        sio.ws.abort()
    await wait_state(running, base, timeout=WAIT)
