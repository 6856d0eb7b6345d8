"""The sans-I/O client protocol, without an event loop or a socket."""

from __future__ import annotations

import orjson
import pytest

from cowrite.errors import ProtocolError
from cowrite.protocol.client import (
    AckArrived,
    ClientProtocol,
    Closed,
    Connected,
    EventArrived,
    Opened,
    Phase,
    Refused,
)

OPEN = '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def connected() -> ClientProtocol:
    proto = ClientProtocol(0.0, handshake_timeout=5.0, auth={"token": "t"})
    assert isinstance(proto.receive(OPEN, 0.1), Opened)
    assert proto.data_to_send() == ['40{"token":"t"}']
    assert proto.receive('40{"sid":"s1"}', 0.2) == Connected("s1")
    return proto


def test_handshake_heartbeat_events_and_acks() -> None:
    proto = connected()
    assert proto.phase is Phase.CONNECTED
    assert proto.deadline == pytest.approx(0.2 + 45.0)
    assert proto.receive("2", 1.0) is None
    assert proto.data_to_send() == ["3"]
    assert proto.receive('42["remote-edit",{"seq":1}]', 2.0) == EventArrived(
        "remote-edit", [{"seq": 1}]
    )
    ack_id = proto.emit("edit-operation", {"operation": {"a": 1}}, ack=True)
    assert ack_id == 0
    [text] = proto.data_to_send()
    assert text == '420["edit-operation",{"operation":{"a":1}}]'
    assert proto.receive('430[{"ok":true,"seq":4}]', 3.0) == AckArrived(0, [{"ok": True, "seq": 4}])
    assert not proto.expired(47.0) and proto.expired(48.0)


def test_binary_operation_is_sent_as_attachment_and_reassembled() -> None:
    proto = connected()
    proto.emit("edit-operation", {"operation": b"\x00\x01"}, ack=False)
    text, blob = proto.data_to_send()
    assert text == '451-["edit-operation",{"operation":{"_placeholder":true,"num":0}}]'
    assert blob == b"\x00\x01"
    assert (
        proto.receive('451-["remote-edit",{"operation":{"_placeholder":true,"num":0}}]', 1) is None
    )
    assert proto.receive(b"\xff", 1) == EventArrived("remote-edit", [{"operation": b"\xff"}])


def test_refusal_and_closing() -> None:
    proto = ClientProtocol(0.0, handshake_timeout=5.0, auth={})
    proto.receive(OPEN, 0.0)
    refusal = {"message": "Authentication failed", "data": {"code": "token_missing"}}
    assert proto.receive("44" + orjson.dumps(refusal).decode(), 0.1) == Refused(
        "Authentication failed", {"code": "token_missing"}
    )
    assert proto.phase is Phase.CLOSED
    proto = connected()
    assert proto.receive("41", 1.0) == Closed("io server disconnect")
    proto = connected()
    assert proto.receive("1", 1.0) == Closed("transport close")
    proto = connected()
    proto.disconnect()
    assert proto.data_to_send() == ["41"]


@pytest.mark.parametrize("bad", ["", "9", '0{"sid":1}', "4x", '42/admin,["e"]', '40{"sid":"x"}'])
def test_bad_input_is_a_protocol_error(bad: str) -> None:
    proto = connected()
    if bad.startswith("0"):
        proto = ClientProtocol(0.0, handshake_timeout=5.0, auth={})
    with pytest.raises(ProtocolError):
        proto.receive(bad, 1.0)


def test_handshake_deadline() -> None:
    proto = ClientProtocol(10.0, handshake_timeout=5.0, auth={})
    assert not proto.expired(14.9) and proto.expired(15.0)
    with pytest.raises(ProtocolError):
        proto.emit("x", 1, ack=False)
