"""Socket.IO namespace bookkeeping, no event loop."""

from __future__ import annotations

import pytest

from cowrite.errors import ProtocolError
from cowrite.protocol.sio_session import (
    AckReceived,
    ConnectRequested,
    EventReceived,
    NamespaceLeft,
    SocketIOSession,
)


def test_connect_accept_event_ack_disconnect() -> None:
    s = SocketIOSession(0.0, 45.0)
    assert s.receive('0{"token":"t"}') == ConnectRequested("/", {"token": "t"})
    assert s.accept("/", "sock1") == '0{"sid":"sock1"}'
    assert s.connect_deadline is None
    assert s.receive('2["e",1]') == EventReceived("/", "e", [1], None)
    assert s.receive('212["e"]') == EventReceived("/", "e", [], 12)
    assert s.receive('33["ok"]') == AckReceived("/", 3, ["ok"])
    assert s.receive("1") == NamespaceLeft("/")
    assert s.namespaces == {}


def test_accept_with_a_private_id() -> None:
    """Connection-state recovery: the CONNECT answer carries the pid."""
    s = SocketIOSession(0.0, 45.0)
    s.receive('0{"token":"t","pid":"p1","offset":"o"}')
    assert s.accept("/", "sock1", "p2") == '0{"sid":"sock1","pid":"p2"}'


def test_refuse_packet() -> None:
    s = SocketIOSession(0.0, 45.0)
    s.receive("0/random")
    assert s.refuse("/random", "Invalid namespace") == '4/random,{"message":"Invalid namespace"}'
    assert s.refuse("/", "no", {"code": "x"}) == '4{"message":"no","data":{"code":"x"}}'
    assert s.namespaces == {}


@pytest.mark.parametrize("packet", ['2["e"]', '31["x"]', "1", "4{}"])
def test_packets_for_unconnected_namespace_are_invalid(packet: str) -> None:
    with pytest.raises(ProtocolError):
        SocketIOSession(0.0, 45.0).receive(packet)


def test_double_connect_is_invalid() -> None:
    s = SocketIOSession(0.0, 45.0)
    s.receive("0")
    with pytest.raises(ProtocolError):
        s.receive("0")


def test_connect_timeout() -> None:
    s = SocketIOSession(10.0, 5.0)
    assert not s.connect_timed_out(14.9)
    assert s.connect_timed_out(15.0)
    s.receive("0")
    s.accept("/", "x")
    assert not s.connect_timed_out(100.0)


def test_server_disconnect_packet() -> None:
    s = SocketIOSession(0.0, 45.0)
    s.receive("0/a,")
    s.accept("/a", "x")
    assert s.server_disconnect("/a") == "1/a,"
    assert s.server_disconnect("/") == "1"


def test_fast_event_path_matches_the_general_one() -> None:
    from cowrite.protocol.socketio import fast_event

    assert fast_event('2["e",1,{"a":[true]}]') == ["e", 1, {"a": [True]}]
    assert fast_event('2["connect"]') is None  # reserved: general path refuses it
    assert fast_event("2[1]") is None  # numeric event names: general path
    assert fast_event("2[") is None
    s = SocketIOSession(0.0, 45.0)
    s.receive("0")
    s.accept("/", "x")
    assert s.receive('2["e",1]') == EventReceived("/", "e", [1], None)
    assert s.receive("2[7,1]") == EventReceived("/", "7", [1], None)
    with pytest.raises(ProtocolError):
        s.receive('2["disconnect"]')
    with pytest.raises(ProtocolError):
        s.receive("2[")
