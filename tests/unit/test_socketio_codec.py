"""Socket.IO v5 codec, no event loop."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrite.errors import ProtocolError
from cowrite.protocol.socketio import (
    Decoder,
    SioPacket,
    SioType,
    decode_header,
    encode,
    encode_event_text,
)


def decode(text: str) -> SioPacket | None:
    return Decoder().feed(text)


def test_connect_packets() -> None:
    assert decode("0") == SioPacket(SioType.CONNECT, "/", None, None)
    assert decode('0{"token":"123"}') == SioPacket(SioType.CONNECT, "/", {"token": "123"})
    assert decode("0/admin,") == SioPacket(SioType.CONNECT, "/admin")
    assert decode("0/admin") == SioPacket(SioType.CONNECT, "/admin")
    assert decode('0/admin,{"a":1}') == SioPacket(SioType.CONNECT, "/admin", {"a": 1})


def test_event_and_ack_packets() -> None:
    assert decode('2["hello",1]') == SioPacket(SioType.EVENT, "/", ["hello", 1])
    assert decode('2/admin,456["project:delete",123]') == SioPacket(
        SioType.EVENT, "/admin", ["project:delete", 123], 456
    )
    assert decode('3/admin,456["ok"]') == SioPacket(SioType.ACK, "/admin", ["ok"], 456)
    assert decode("1/admin,") == SioPacket(SioType.DISCONNECT, "/admin")


def test_binary_event_reassembly() -> None:
    dec = Decoder()
    head = '52-["hello",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert dec.feed(head) is None
    assert dec.awaiting_attachments
    assert dec.feed(b"\x01") is None
    packet = dec.feed(b"\x02")
    assert packet == SioPacket(SioType.EVENT, "/", ["hello", b"\x01", b"\x02"])
    assert not dec.awaiting_attachments


def test_binary_ack_reassembly() -> None:
    dec = Decoder()
    assert dec.feed('61-/admin,456[{"_placeholder":true,"num":0}]') is None
    assert dec.feed(b"\x03") == SioPacket(SioType.ACK, "/admin", [b"\x03"], 456)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "7",
        "x",
        "0[]",  # CONNECT payload must be an object
        '0"str"',
        "1{}",  # DISCONNECT has no payload
        "2",  # EVENT needs an array
        "2{}",
        "2[]",
        '2["connect"]',  # reserved event name
        "2[true]",
        "3[]",  # ACK needs an id
        "3123{}",
        "2[",  # bad JSON
        "5[]",  # binary without count
        "5x-[]",
        '51-["a"]',  # placeholder count mismatch shows up later; header alone ok? no: count>0 waits
        "2" + "1" * 20 + '["a"]',  # ack id too large
        '599-["a"]',  # too many attachments
    ],
)
def test_invalid_packets(bad: str) -> None:
    dec = Decoder()
    try:
        result = dec.feed(bad)
    except ProtocolError:
        return
    # A binary header that waits for attachments is not an error yet: a wrong
    # attachment then is.
    assert result is None and dec.awaiting_attachments
    with pytest.raises(ProtocolError):
        dec.feed(b"\x00")


def test_text_while_awaiting_attachments_is_an_error() -> None:
    dec = Decoder()
    dec.feed('51-["a",{"_placeholder":true,"num":0}]')
    with pytest.raises(ProtocolError):
        dec.feed('2["b"]')


def test_unexpected_binary_is_an_error() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(b"\x00")


@pytest.mark.parametrize(
    "placeholder",
    [
        '{"_placeholder":true,"num":5}',
        '{"_placeholder":true,"num":"0"}',
        '{"_placeholder":true,"num":-1}',
    ],
)
def test_bad_placeholders(placeholder: str) -> None:
    dec = Decoder()
    dec.feed(f'51-["a",{placeholder}]')
    with pytest.raises(ProtocolError):
        dec.feed(b"\x00")


def test_encode_plain_and_binary() -> None:
    assert encode(SioPacket(SioType.EVENT, "/", ["a", 1])) == ['2["a",1]']
    assert encode(SioPacket(SioType.ACK, "/x", ["ok"], 7)) == ['3/x,7["ok"]']
    assert encode(SioPacket(SioType.CONNECT, "/", {"sid": "s"})) == ['0{"sid":"s"}']
    assert encode(SioPacket(SioType.EVENT, "/", ["b", b"\x01", {"k": b"\x02"}])) == [
        '52-["b",{"_placeholder":true,"num":0},{"k":{"_placeholder":true,"num":1}}]',
        b"\x01",
        b"\x02",
    ]
    assert encode(SioPacket(SioType.ACK, "/", [b"\x01"], 3)) == [
        '61-3[{"_placeholder":true,"num":0}]',
        b"\x01",
    ]


def test_encode_event_text_fast_path() -> None:
    assert encode_event_text("/", "e", (1, "x")) == '2["e",1,"x"]'
    assert encode_event_text("/n", "e", ()) == '2/n,["e"]'
    assert encode_event_text("/", "e", (b"\x00",)) is None


def test_header_split() -> None:
    assert decode_header('52-/ns,12["x"]') == (SioType.BINARY_EVENT, 2, "/ns", 12, '["x"]')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
binary_values = st.recursive(
    json_values | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=5).filter(lambda k: k != "_placeholder"), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(
    st.text(min_size=1, max_size=10).filter(lambda e: e not in {"connect", "disconnect"}),
    st.lists(binary_values, max_size=4),
    st.sampled_from(["/", "/a"]),
    st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_event_roundtrip_property(
    event: str, args: list[object], nsp: str, ack_id: int | None
) -> None:
    from cowrite.protocol.socketio import RESERVED_EVENTS

    if event in RESERVED_EVENTS:
        return
    parts = encode(SioPacket(SioType.EVENT, nsp, [event, *args], ack_id))
    dec = Decoder(max_attachments=1000)
    result = None
    for part in parts:
        result = dec.feed(part)
    assert result == SioPacket(SioType.EVENT, nsp, [event, *args], ack_id)


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_decoder_only_raises_protocol_errors(message: str | bytes) -> None:
    dec = Decoder()
    with contextlib.suppress(ProtocolError):
        dec.feed(message)
