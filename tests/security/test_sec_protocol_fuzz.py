"""Protocol parsers fuzzed through a live server (hypothesis, bounded examples).

Every example is one Engine.IO session fed generated input, over WebSocket
(text and binary messages, or raw RFC 6455 frames) or long-polling (POST
bodies).  Inputs that are invalid by the protocol must close the session
(engine.io-protocol v4: "closes the session upon invalid packet format";
socket.io-protocol v5: a packet for a namespace that is not connected is an
invalid state); arbitrary input may or may not.  After every example:

* no ERROR was logged anywhere (a handler or task exception);
* the server still answers ``/healthz`` and a control client, connected the
  whole time, still gets its edits acknowledged;
* once the fuzzing client is gone, the sessions, connections, admission
  counters, sockets, rooms and the service's connections and documents are
  back to their level before the example.

``COWRITE_FUZZ_EXAMPLES`` sets the examples per test (default 200).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sec_support import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    POLL_PATH,
    WAIT,
    Closed,
    ErrorRecords,
    RawSio,
    Running,
    client_frame,
    http_get,
    live_state,
    open_ws,
    start_app,
    token,
    wait_state,
)

EXAMPLES = int(os.environ.get("COWRITE_FUZZ_EXAMPLES", "200"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # No shrinking: a failing example's waits are bounded but long (seconds),
    # and shrinking replays it hundreds of times; the example is printed as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
    # One server serves every example of a test (that is the point: it must
    # survive all of them), so the function-scoped fixtures are shared on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- the harness ------------------------------------------------------------------------


@dataclass
class Harness:
    running: Running
    control: RawSio
    baseline: dict[str, int]
    errors: ErrorRecords
    counter: itertools.count[int]

    @property
    def port(self) -> int:
        return self.running.port

    def before_example(self) -> None:
        self.errors.clear()  # each example answers for its own records

    async def after_example(self) -> None:
        """The invariants every example must leave behind."""
        await wait_state(self.running, self.baseline, timeout=WAIT, poll=0.01)
        self.errors.check()
        status, body = await http_get(self.port, "/healthz")
        assert (status, body) == (200, b"ok")
        n = next(self.counter)
        ack = await self.control.call(
            "edit-operation",
            {"documentId": "control", "operation": {"n": n}, "clientOpId": f"control-{n}"},
        )
        assert ack["ok"] is True and ack["seq"] == n, ack


@pytest.fixture
async def harness(tmp_path: Any, error_log: ErrorRecords) -> AsyncIterator[Harness]:
    running = await start_app(tmp_path / "fuzz")
    try:
        control = await RawSio.open(running.port)
        await control.connect_ok("control")
        assert (await control.call("join-document", {"documentId": "control"}))["ok"]
        yield Harness(running, control, live_state(running), error_log, itertools.count(1))
        # The control client saw every one of its edits acknowledged and
        # stored: the log holds exactly them.
        page = await control.call("sync", {"documentId": "control", "since": 0, "limit": 1000})
        assert page["ok"] and not page["more"], page
        assert [op["seq"] for op in page["ops"]] == list(range(1, len(page["ops"]) + 1))
        control.ws.close()
    finally:
        await asyncio.wait_for(running.app.stop(), 15.0)


# -- inputs -------------------------------------------------------------------------------

VALID_TOKEN = token("fuzzer")
# Well-formed packets, as seeds for mutation.
VALID_PACKETS = [
    "2",
    "3",
    "6",
    "40" + orjson.dumps({"token": VALID_TOKEN}).decode(),
    '42["join-document",{"documentId":"fz"}]',
    '421["edit-operation",{"documentId":"fz","operation":{"a":[1,2]},"clientOpId":"x"}]',
    '451-["edit-operation",{"documentId":"fz","operation":{"_placeholder":true,"num":0}}]',
    '42/chat,7["presence-update",{"documentId":"fz","state":{"c":1}}]',
    '431[{"ok":true}]',
    "41",
    "1",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: Any) -> str:
    # The standard library writes integers of any size (orjson stops at 64 bits).
    return json.dumps(value, separators=(",", ":"))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A well-formed packet with a few characters deleted, replaced or inserted."""
    text = draw(st.sampled_from(VALID_PACKETS))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        piece = draw(st.text(min_size=1, max_size=3))
        if kind == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif kind == "insert":
            text = text[:pos] + piece + text[pos:]
        elif kind == "replace":
            text = text[:pos] + piece + text[pos + 1 :]
        else:
            text = text[:pos]
    return text


def nested(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


not_eio_type = st.characters(exclude_characters="0123456", exclude_categories=["Cs"])
not_sio_type = st.characters(exclude_characters="0123456", exclude_categories=["Cs"])
event_names = st.sampled_from(["join-document", "edit-operation", "sync", "x"])
placeholder = st.fixed_dictionaries(
    {"_placeholder": st.just(True), "num": st.integers(1, 20) | st.text(max_size=2) | st.none()}
)

# Socket.IO packets that are invalid whatever the session's state.
bad_sio_text = st.one_of(
    st.just(""),
    st.tuples(not_sio_type, st.text(max_size=20)).map("".join),
    # EVENT whose payload is not JSON (a truncated array), or not a non-empty
    # array with an event name first.
    st.builds(lambda v, cut: "2" + _dumps(["x", v])[: -cut - 1], json_values, st.integers(0, 5)),
    st.sampled_from(['2{"a":1}', '2"x"', "2[]", "2[true]", "2[null,1]", "2[[1]]", "2{"]),
    # Reserved event names may not be emitted by a client.
    st.sampled_from(["connect", "connect_error", "disconnect", "disconnecting"]).map(
        lambda e: "2" + _dumps([e])
    ),
    # Ack ids longer than 15 digits.
    st.builds(lambda d, e: f"2{d}" + _dumps([e]), st.integers(10**15, 10**40), event_names),
    # Attachment counts that are not a count, or over max_attachments (10).
    st.builds(
        lambda t, c, e: f"{t}{c}" + _dumps([e]),
        st.sampled_from("56"),
        st.sampled_from(["", "-", "x-", "1x-", "-1-", "1234567-", "11-", "99-", "\u0661-"]),
        event_names,
    ),
    # Nesting beyond the JSON parser's depth limit (orjson: 1024).
    st.integers(1025, 5000).map(lambda d: "2" + nested(d, '"x"')),
    # Packets for namespaces that are not connected, CONNECT_ERROR from a
    # client, an ACK without an id.
    st.sampled_from(["1/nope,", '2/nope,["x"]', '3/nope,1["x"]', '4{"message":"x"}', '3["x"]']),
)

# Binary packets whose attachments do not match their placeholders: each is
# a sequence of Engine.IO messages (text header, then the attachments).
bad_binary_sequences = st.one_of(
    # A placeholder number out of range, or not an integer.
    st.builds(
        lambda p, b: ["451-" + _dumps(["edit-operation", {"operation": p}]), b],
        placeholder,
        st.binary(max_size=8),
    ),
    # An attachment no placeholder refers to.
    st.builds(
        lambda b: ["451-" + _dumps(["edit-operation", {"operation": 1}]), b],
        st.binary(max_size=8),
    ),
    # A text packet while attachments are awaited.
    st.builds(
        lambda t: ["452-" + _dumps(["x", {"_placeholder": True, "num": 0}]), t],
        st.sampled_from(["2", '42["x"]', "6", "3"]),
    ),
    # A placeholder nested deeper than 64 levels.
    st.integers(66, 200).map(
        lambda d: [
            '451-["x",' + nested(d, _dumps({"_placeholder": True, "num": 0})) + "]",
            b"\x00",
        ]
    ),
    # A binary message while no attachment is awaited.
    st.binary(max_size=16).map(lambda b: [b]),
)

bad_eio_text = st.one_of(
    st.just(""),
    st.tuples(not_eio_type, st.text(max_size=10)).map("".join),
    st.text(max_size=10).map(lambda t: "0" + t),  # OPEN from a client
    st.text(max_size=10).map(lambda t: "5" + t),  # UPGRADE outside a probe
    bad_sio_text.map(lambda t: "4" + t),
)


def _raw(frames: list[bytes]) -> bytes:
    return b"".join(frames)


# Frames that RFC 6455 (or our size limit) requires the server to fail.
bad_frames = st.one_of(
    st.text(max_size=20).map(lambda t: client_frame(OP_TEXT, t.encode(), mask=False)),
    st.builds(
        lambda rsv, p: client_frame(OP_TEXT, p, rsv=rsv),
        st.integers(1, 7),
        st.binary(max_size=8),
    ),
    st.builds(
        lambda op, p: client_frame(op, p),
        st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]),
        st.binary(max_size=8),
    ),
    st.binary(min_size=126, max_size=300).map(lambda p: client_frame(OP_PING, p)),
    st.binary(max_size=8).map(lambda p: client_frame(OP_PING, p, fin=False)),
    st.binary(max_size=8).map(lambda p: client_frame(OP_CONT, p)),
    st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 2999, 5000]).map(
        lambda code: client_frame(OP_CLOSE, struct.pack("!H", code))
    ),
    # Invalid UTF-8 in a text message (close 1007), whole or fragmented.
    st.sampled_from([b"\xff", b"4\xc3", b"42\xed\xa0\x80", b"\xc0\xaf"]).map(
        lambda p: client_frame(OP_TEXT, p)
    ),
    st.just(_raw([client_frame(OP_TEXT, b"4\xe2", fin=False), client_frame(OP_CONT, b"\x28")])),
    # A message over max_payload (1,000,000 bytes), announced by its header.
    st.sampled_from([1_000_001, 2**31, 2**63 - 1]).map(
        lambda n: struct.pack("!BBQ", 0x81, 0xFF, n) + b"\x00\x00\x00\x00" + b"4" * 16
    ),
)

# Anything at all, the last message possibly a partial frame.
random_message = st.one_of(
    st.text(max_size=64),
    st.binary(max_size=64),
    mutated(),
    st.sampled_from(VALID_PACKETS),
    st.builds(
        lambda e, v, a: f"42{a}" + _dumps([e, v]),
        event_names,
        json_values,
        st.sampled_from(["", "1", "999999999999999"]),
    ),
)
random_raw = st.binary(min_size=1, max_size=64)


def benign(connected: bool) -> st.SearchStrategy[str]:
    """Messages that leave the session open and its decoder idle."""
    options = ["2", "3", "6"]
    if connected:
        options += ['42["no-such-event",{}]', '4212["no-such-event"]']
    return st.sampled_from(options)


# -- WebSocket ----------------------------------------------------------------------------


async def ws_session(h: Harness, connected: bool) -> RawSio:
    sio = await RawSio.open(h.port)
    if connected:
        await sio.connect_ok("fuzzer")
    return sio


@st.composite
def ws_bad_case(draw: st.DrawFn) -> tuple[bool, list[str], list[str | bytes], bytes]:
    connected = draw(st.booleans())
    prefix = draw(st.lists(benign(connected), max_size=3))
    kind = draw(st.sampled_from(["eio", "binary", "frame"]))
    messages: list[str | bytes] = []
    raw = b""
    if kind == "eio":
        messages = [draw(bad_eio_text)]
    elif kind == "binary":
        messages = [(m if isinstance(m, bytes) else "4" + m) for m in draw(bad_binary_sequences)]
    else:
        raw = draw(bad_frames)
    return connected, prefix, messages, raw


@fuzz_settings
@given(case=ws_bad_case())
async def test_invalid_websocket_input_closes_the_session(
    harness: Harness, case: tuple[bool, list[str], list[str | bytes], bytes]
) -> None:
    connected, prefix, messages, raw = case
    harness.before_example()
    sio = await ws_session(harness, connected)
    try:
        for message in [*prefix, *messages]:
            sio.ws.send(message)
        if raw:
            sio.ws.send_raw(raw)
        try:
            await sio.ws.wait_closed(WAIT)
        except TimeoutError:
            raise AssertionError(f"the session survived {messages or raw!r}") from None
    finally:
        sio.ws.abort()
    await harness.after_example()


@fuzz_settings
@given(
    connected=st.booleans(),
    messages=st.lists(random_message, max_size=6),
    tail=st.none() | random_raw,
)
async def test_arbitrary_websocket_input(
    harness: Harness, connected: bool, messages: list[str | bytes], tail: bytes | None
) -> None:
    harness.before_example()
    sio = await ws_session(harness, connected)
    try:
        for message in messages:
            sio.ws.send(message)
        if tail is not None:
            sio.ws.send_raw(tail)  # maybe a partial frame: nothing to probe after it
        else:
            # Alive (answers an Engine.IO ping) or closed: either is fine.
            sio.ws.send("2")
            try:
                async with asyncio.timeout(WAIT):
                    while await sio.ws.recv() != "3":
                        pass
            except Closed:
                pass
    finally:
        sio.ws.abort()
    await harness.after_example()


# -- long-polling -------------------------------------------------------------------------


async def poll_session(port: int, http: aiohttp.ClientSession, connected: bool) -> str:
    """A new polling session's sid (connected to "/" when ``connected``)."""
    base = f"http://127.0.0.1:{port}{POLL_PATH}"
    async with http.get(base) as res:
        assert res.status == 200
        sid = str(orjson.loads((await res.text())[1:])["sid"])
    if connected:
        url = f"{base}&sid={sid}"
        body = "40" + orjson.dumps({"token": VALID_TOKEN}).decode()
        async with http.post(url, data=body) as res:
            assert res.status == 200
        async with http.get(url) as res:
            assert (await res.text()).startswith("40{"), "not connected"
    return sid


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # One connection per request: the engine's connection count then returns to
    # its starting level between examples (no idle keep-alive connection).
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=WAIT),
        connector=aiohttp.TCPConnector(force_close=True),
    ) as session:
        yield session


bad_poll_body = st.one_of(
    st.sampled_from([b"\xff", b"4\xc3\x28", b"2\x1e\xed\xa0\x80"]),  # not UTF-8
    st.sampled_from(["b!!", "babc", "b====", "b\u00e9"]).map(str.encode),  # not base64
    st.sampled_from(["", "\x1e", "2\x1e", "\x1e2", "4\x1e\x1e4"]).map(str.encode),  # empty records
    bad_eio_text.filter(lambda t: "\x1e" not in t).map(str.encode),
    st.tuples(st.lists(st.sampled_from(["2", "3", "6"]), max_size=3), bad_eio_text).map(
        lambda t: "\x1e".join([*t[0], t[1]]).encode()
    ),
)


@fuzz_settings
@given(connected=st.booleans(), body=bad_poll_body)
async def test_invalid_polling_payload_closes_the_session(
    harness: Harness, http: aiohttp.ClientSession, connected: bool, body: bytes
) -> None:
    harness.before_example()
    sid = await poll_session(harness.port, http, connected)
    url = f"http://127.0.0.1:{harness.port}{POLL_PATH}&sid={sid}"
    async with http.post(url, data=body) as res:
        # Engine.IO-level errors answer 400; a bad Socket.IO packet inside a
        # valid payload is found after the 200, and closes the session too.
        assert res.status in (200, 400), res.status
    sessions = harness.running.engine.sessions
    async with asyncio.timeout(WAIT):
        while sid in sessions:
            await asyncio.sleep(0.01)
    await harness.after_example()


random_poll_body = st.one_of(
    st.binary(max_size=128),
    st.lists(random_message, max_size=5).map(
        lambda ms: "\x1e".join(
            m if isinstance(m, str) else "b" + base64.b64encode(m).decode() for m in ms
        ).encode()
    ),
)


@fuzz_settings
@given(connected=st.booleans(), bodies=st.lists(random_poll_body, min_size=1, max_size=3))
async def test_arbitrary_polling_payloads(
    harness: Harness, http: aiohttp.ClientSession, connected: bool, bodies: list[bytes]
) -> None:
    harness.before_example()
    sid = await poll_session(harness.port, http, connected)
    url = f"http://127.0.0.1:{harness.port}{POLL_PATH}&sid={sid}"
    for body in bodies:
        async with http.post(url, data=body) as res:
            assert res.status in (200, 400), res.status
    await asyncio.sleep(0)
    if sid in harness.running.engine.sessions:
        async with http.post(url, data=b"1") as res:  # the client closes it
            assert res.status in (200, 400)
    await harness.after_example()


# -- the cases the fuzzing found, as plain tests ---------------------------------------------


async def test_bad_socketio_packet_in_a_polling_post_releases_the_session(
    tmp_path: Any, http: aiohttp.ClientSession
) -> None:
    """The POST is answered 200 (the Engine.IO payload is valid), the Socket.IO
    decoder then closes the session: it must leave the session table and the
    admission counters without the client sending anything more."""
    running = await start_app(tmp_path / "p", server={"ping_interval": 1.0, "ping_timeout": 1.0})
    try:
        base = live_state(running)
        for connected in (False, True):
            sid = await poll_session(running.port, http, connected)
            url = f"http://127.0.0.1:{running.port}{POLL_PATH}&sid={sid}"
            async with http.post(url, data=b"4") as res:  # an empty Socket.IO packet
                assert res.status == 200
            # Longer than a heartbeat: not even the ping timer releases it.
            await asyncio.sleep(2.5)
            assert sid not in running.engine.sessions, (
                f"closed session still held (connected={connected}): "
                f"{running.engine.sessions[sid].session.state}, {live_state(running)}"
            )
            await wait_state(running, base, timeout=WAIT)
    finally:
        await running.app.stop()


@pytest.mark.parametrize("connected", [False, True])
async def test_invalid_utf8_closes_the_session_not_only_the_socket(
    tmp_path: Any, connected: bool
) -> None:
    """RFC 6455 section 8.1: close 1007.  The Engine.IO session on that socket
    must end with it, not linger until the heartbeat times out."""
    running = await start_app(tmp_path / "u")
    try:
        base = live_state(running)
        sio = await RawSio.open(running.port)
        if connected:
            await sio.connect_ok("u")
        sio.ws.send_raw(client_frame(OP_TEXT, b"42\xff"))
        await sio.ws.wait_closed()
        assert sio.ws.close_code == 1007
        await wait_state(running, base, timeout=WAIT)
    finally:
        await running.app.stop()


async def test_invalid_utf8_on_an_upgrade_probe_leaves_the_polling_session_usable(
    tmp_path: Any, http: aiohttp.ClientSession
) -> None:
    """A probe WebSocket that dies (here: close 1007) is a lost probe: the
    session goes on polling normally (a GET parks again) and may upgrade later."""
    running = await start_app(tmp_path / "q")
    try:
        sid = await poll_session(running.port, http, True)
        probe = await open_ws(running.port, f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        probe.send_raw(client_frame(OP_TEXT, b"2probe\xff"))
        await probe.wait_closed()
        assert probe.close_code == 1007
        url = f"http://127.0.0.1:{running.port}{POLL_PATH}&sid={sid}"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5), http.get(url) as res:
                body = await res.text()
                raise AssertionError(f"the poll did not park: {res.status} {body!r}")
        # A new probe is accepted and completes the upgrade.
        ws = await open_ws(running.port, f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        ws.send("2probe")
        assert await ws.recv() == "3probe"
        ws.abort()
    finally:
        await running.app.stop()
