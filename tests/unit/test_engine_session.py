"""The Engine.IO session state machine, driven with a fake clock (no event loop)."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowrite.errors import CloseReason
from cowrite.protocol.session import (
    PARK,
    EngineConfig,
    EngineSession,
    MessageReceived,
    SessionClosed,
    SessionState,
    Transport,
    Upgraded,
)

CFG = EngineConfig(ping_interval=0.3, ping_timeout=0.2, max_payload=1_000_000)


def polling() -> EngineSession:
    s = EngineSession("sid1", Transport.POLLING, CFG)
    s.open(0.0)
    return s


def test_handshake_has_exactly_the_spec_keys() -> None:
    s = EngineSession("abc", Transport.POLLING, CFG)
    text = s.open(0.0)
    assert text[0] == "0"
    assert orjson.loads(text[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 300,
        "pingTimeout": 200,
        "maxPayload": 1_000_000,
    }
    ws = EngineSession("w", Transport.WEBSOCKET, CFG)
    assert orjson.loads(ws.open(0.0)[1:])["upgrades"] == []


def test_post_then_poll_returns_queued_packets() -> None:
    s = polling()
    assert s.post(b"4hello", 0.0).body == b"ok"
    assert s.events == [MessageReceived("hello")]
    s.send_packet("4hello")
    assert s.poll(0.0).body == b"4hello"


def test_poll_parks_until_something_is_sent() -> None:
    s = polling()
    assert s.poll(0.0) is PARK
    assert s.take_poll_response() is None
    s.send_packet("4a")
    s.send_packet(b"\x01")
    assert s.take_poll_response() == b"4a\x1ebAQ=="
    assert not s.poll_parked


def test_duplicate_poll_closes_the_session() -> None:
    s = polling()
    assert s.poll(0.0) is PARK
    second = s.poll(0.0)
    assert second.status == 400
    assert s.take_poll_response() == b"1"
    assert s.closed
    assert s.events == [SessionClosed(CloseReason.TRANSPORT_ERROR)]
    assert s.poll(0.0).status == 400


def test_invalid_post_closes_the_session() -> None:
    s = polling()
    assert s.post(b"abc", 0.0).status == 400
    assert s.closed
    assert s.poll(0.0).status == 400


def test_oversized_post_is_refused() -> None:
    s = EngineSession("s", Transport.POLLING, EngineConfig(max_payload=2000))
    s.open(0.0)
    assert s.post(b"4" + b"x" * 2000, 0.0).status == 413
    assert s.closed


def test_heartbeat_ping_pong_and_timeout() -> None:
    s = polling()
    assert s.next_deadline() == 0.3
    s.on_timer(0.3)
    assert s.poll(0.3).body == b"2"
    assert s.next_deadline() == 0.5
    assert s.post(b"3", 0.35).body == b"ok"
    assert s.next_deadline() == 0.35 + 0.3
    s.on_timer(0.65)
    s.on_timer(0.86)
    assert s.closed
    assert s.events[-1] == SessionClosed(CloseReason.PING_TIMEOUT)


def test_pong_deadline_counts_from_the_scheduled_ping_not_the_late_timer() -> None:
    s = polling()
    s.on_timer(0.32)  # the adapter's timer ran 20 ms late
    assert s.next_deadline() == 0.5
    s.on_timer(0.5)
    assert s.closed
    assert s.events[-1] == SessionClosed(CloseReason.PING_TIMEOUT)


def test_a_ping_that_reaches_the_client_late_gives_it_the_whole_ping_timeout() -> None:
    # A late timer must not shorten the client's time to answer (Node: the
    # timeout starts when the PING is sent): WebSocket, or a parked GET.
    ws = EngineSession("w", Transport.WEBSOCKET, CFG)
    ws.open(0.0)
    ws.on_timer(0.45)
    assert ws.take_ws_out() == ["2"]
    assert ws.next_deadline() == pytest.approx(0.65)
    s = polling()
    assert s.poll(0.1) is PARK
    s.on_timer(0.45)
    assert s.take_poll_response() == b"2"
    assert s.next_deadline() == pytest.approx(0.65)


def test_a_request_after_the_deadline_finds_the_session_closed_without_any_timer() -> None:
    # engine.io-protocol "closes the session upon ping timeout": pingInterval
    # 300 ms, pingTimeout 200 ms, a GET 500 ms after the handshake gets 400.
    for at in (0.5, 0.5000001, 3.0):
        s = polling()
        reply = s.poll(at)
        assert reply.status == 400, at
        assert s.events == [SessionClosed(CloseReason.PING_TIMEOUT)]
    s = polling()
    assert s.post(b"4x", 0.5).status == 400
    assert s.closed


def test_a_request_just_before_the_deadline_gets_the_overdue_ping() -> None:
    s = polling()
    assert s.poll(0.4999).body == b"2"
    assert s.next_deadline() == 0.5
    assert s.post(b"3", 0.4999).body == b"ok"
    assert not s.closed
    # the schedule restarts from the PONG's time truncated to the millisecond
    assert s.next_deadline() == pytest.approx(0.499 + 0.3)


def test_deadlines_are_exact_on_a_millisecond_clock() -> None:
    # uvloop's clock ticks in whole milliseconds: 255.501 + 0.3 + 0.2 must be
    # reached at 256.001 although the float sum is one ulp above it.
    for start_ms in (64, 15_502, 255_501, 1_023_705, 1_234_567):
        s = EngineSession("sid1", Transport.POLLING, CFG)
        s.open(start_ms / 1000)
        assert s.poll((start_ms + 500) / 1000).status == 400, start_ms


def test_the_schedule_counts_whole_milliseconds_as_node_timers_do() -> None:
    # A client whose timers count whole milliseconds (Node: libuv) may wake up
    # to 1 ms early on a nanosecond clock after sleeping 500 ms.
    s = EngineSession("sid1", Transport.POLLING, CFG)
    s.open(10.0007)
    assert s.poll(10.5001).status == 400
    for k in (1005, 2010, 123_456):  # k / 1000 * 1000 < k in floating point
        s = EngineSession("sid1", Transport.POLLING, CFG)
        s.open(k / 1000)
        assert s.next_deadline() == pytest.approx((k + 300) / 1000)


def test_a_websocket_frame_after_the_deadline_closes_the_session() -> None:
    s = EngineSession("w", Transport.WEBSOCKET, CFG)
    s.open(0.0)
    s.on_timer(0.3)
    assert s.take_ws_out() == ["2"]
    assert s.receive_ws("3", 0.5) is None  # the PONG came too late
    assert s.closed
    assert s.events == [SessionClosed(CloseReason.PING_TIMEOUT)]
    s = EngineSession("w", Transport.WEBSOCKET, CFG)
    s.open(0.0)
    assert s.receive_ws("4hi", 0.31) == "hi"  # the PING was due: sent now
    assert s.take_ws_out() == ["2"]


def test_client_close_answers_parked_poll_with_noop() -> None:
    s = polling()
    assert s.poll(0.0) is PARK
    s.post(b"1", 0.0)
    assert s.take_poll_response() == b"6"
    assert s.closed


def test_upgrade_flow() -> None:
    s = polling()
    assert s.poll(0.0) is PARK
    assert s.begin_upgrade()
    assert s.state is SessionState.UPGRADING
    assert not s.begin_upgrade()  # a second probe is refused
    assert s.receive_probe("2probe", 0.0) == "3probe"
    assert s.take_poll_response() == b"6"
    s.send_packet("4queued")
    assert s.receive_probe("5", 0.0) is None
    assert s.transport is Transport.WEBSOCKET
    assert s.take_ws_out() == ["4queued"]
    assert Upgraded() in s.events
    assert s.poll(0.0).status == 400  # polling refused after upgrade; session lives
    assert s.post(b"4x", 0.0).status == 400
    assert not s.closed
    assert not s.begin_upgrade()  # second WebSocket for the sid


def test_poll_during_upgrade_returns_at_once() -> None:
    s = polling()
    s.begin_upgrade()
    s.receive_probe("2probe", 0.0)
    assert s.poll(0.0).body == b"6"


def test_probe_lost_returns_to_polling() -> None:
    s = polling()
    s.begin_upgrade()
    s.probe_lost()
    assert s.state is SessionState.OPEN
    assert s.transport is Transport.POLLING


def test_websocket_messages() -> None:
    s = EngineSession("w", Transport.WEBSOCKET, CFG)
    s.open(0.0)
    assert s.receive_ws("4hi", 0.0) == "hi"
    assert s.receive_ws(b"\x01", 0.0) == b"\x01"
    assert s.events == []
    assert s.receive_ws("abc", 0.0) is None
    assert s.closed
    assert s.events[-1] == SessionClosed(CloseReason.PARSE_ERROR)


def test_websocket_client_close_packet() -> None:
    s = EngineSession("w", Transport.WEBSOCKET, CFG)
    s.open(0.0)
    s.receive_ws("1", 0.0)
    assert s.events == [SessionClosed(CloseReason.CLIENT_CLOSE)]


def test_graceful_close_over_polling_delivers_queue_then_close() -> None:
    s = polling()
    s.send_packet("441")
    s.close(CloseReason.FORCED_CLOSE, graceful=True, now=0.0)
    assert s.state is SessionState.CLOSING
    assert s.poll(0.0).body == b"441\x1e1"
    assert s.closed


def test_graceful_close_times_out() -> None:
    s = polling()
    s.close(CloseReason.FORCED_CLOSE, graceful=True, now=0.0)
    s.on_timer(0.25)
    assert s.closed


ops = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.binary(max_size=30)),
        st.tuples(st.just("poll"), st.none()),
        st.tuples(st.just("ws"), st.one_of(st.text(max_size=10), st.binary(max_size=5))),
        st.tuples(st.just("probe"), st.sampled_from(["2probe", "5", "4x", "2"])),
        st.tuples(st.just("begin"), st.none()),
        st.tuples(st.just("lost"), st.none()),
        st.tuples(st.just("timer"), st.floats(0, 0.5)),
        st.tuples(st.just("send"), st.text(max_size=5)),
        st.tuples(st.just("close"), st.booleans()),
        st.tuples(st.just("abort"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(ops, st.sampled_from(list(Transport)))
def test_no_input_sequence_raises(sequence: list[tuple[str, object]], transport: Transport) -> None:
    from cowrite.errors import ProtocolError

    s = EngineSession("f", transport, CFG)
    s.open(0.0)
    now = 0.0
    for op, arg in sequence:
        if op == "post":
            assert isinstance(arg, bytes)
            s.post(arg, now)
        elif op == "poll":
            s.poll(now)
        elif op == "ws":
            assert isinstance(arg, str | bytes)
            s.receive_ws(arg, now)
        elif op == "probe":
            assert isinstance(arg, str)
            with contextlib.suppress(ProtocolError):
                s.receive_probe(arg, now)
        elif op == "begin":
            s.begin_upgrade()
        elif op == "lost":
            s.probe_lost()
        elif op == "timer":
            assert isinstance(arg, float)
            now += arg
            s.on_timer(now)
        elif op == "send":
            s.send_packet("4" + str(arg))
        elif op == "close":
            s.close(CloseReason.FORCED_CLOSE, graceful=bool(arg), now=now)
        elif op == "abort":
            s.poll_aborted()
        s.take_poll_response()
        s.take_ws_out()
    closes = [e for e in s.events if isinstance(e, SessionClosed)]
    assert len(closes) <= 1
    assert (len(closes) == 1) == s.closed


def test_poll_responses_carry_at_most_16_packets() -> None:
    s = polling()
    for i in range(40):
        s.send_packet(f"4m{i}")
    bodies = [s.poll(0.0).body for _ in range(3)]
    counts = [body.count(b"\x1e") + 1 for body in bodies if body]
    assert counts == [16, 16, 8]
    assert s.poll(0.0) is PARK


def test_graceful_close_after_a_long_queue() -> None:
    s = polling()
    for i in range(20):
        s.send_packet(f"4m{i}")
    s.close(CloseReason.FORCED_CLOSE, graceful=True, now=0.0)
    assert not s.closed
    s.poll(0.0)
    assert not s.closed
    last = s.poll(0.0).body
    assert last is not None and last.endswith(b"\x1e1")
    assert s.closed


def test_session_ids_are_distinct_20_char_base64url() -> None:
    import re

    from cowrite.server.ids import new_id

    ids = [new_id() for _ in range(3000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{20}", i) for i in ids)


def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    import os

    from cowrite.server.ids import _pool, new_id

    new_id()  # the pool holds ids now
    upcoming = set(_pool)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids, then leave at once
        os.write(write, " ".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(childs) == 5 and not upcoming & set(childs)


def test_handshake_queries_are_parsed_once_and_session_ones_every_time() -> None:
    from cowrite.server.engine import _QUERIES, _parse_query

    _QUERIES.clear()
    first = _parse_query(b"EIO=4&transport=websocket")
    assert first == {"EIO": ["4"], "transport": ["websocket"]}
    assert _parse_query(b"EIO=4&transport=websocket") is first
    for query in (b"EIO=4&transport=polling&t=OaB1", b"EIO=4&transport=polling&sid=abc"):
        assert _parse_query(query) is not _parse_query(query)
    assert _parse_query(b"EIO=4&transport=polling&sid=abc")["sid"] == ["abc"]
    assert list(_QUERIES) == [b"EIO=4&transport=websocket"]
