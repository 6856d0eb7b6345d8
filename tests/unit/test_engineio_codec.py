"""Engine.IO v4 codecs, no event loop."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrite.errors import ProtocolError
from cowrite.protocol.engineio import (
    Packet,
    PacketType,
    decode_payload,
    decode_text,
    encode_payload,
    encode_text,
)


def test_decode_every_packet_type() -> None:
    for ptype in PacketType:
        assert decode_text(f"{ptype.value}data") == Packet(ptype, "data")


@pytest.mark.parametrize("bad", ["", "7", "a", "x4hello", "\x1e"])
def test_decode_rejects_bad_packets(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode_text(bad)


def test_payload_text_and_binary_roundtrip() -> None:
    body = b"4hello\x1ebAQIDBA=="
    packets = decode_payload(body)
    assert packets == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
    ]
    assert encode_payload(["4hello", b"\x01\x02\x03\x04"]) == body


def test_payload_several_packets() -> None:
    body = b"4test1\x1e4test2\x1e4test3"
    assert [p.data for p in decode_payload(body)] == ["test1", "test2", "test3"]


@pytest.mark.parametrize("bad", [b"abc", b"", b"4a\x1e", b"b!!!", b"\xff\xfe", b"bAQ=\x1e9"])
def test_payload_rejects_invalid(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(bad)


def test_encode_text() -> None:
    assert encode_text(PacketType.PING) == "2"
    assert encode_text(PacketType.MESSAGE, "x") == "4x"


@given(st.binary(max_size=200))
def test_payload_decoder_never_raises_anything_else(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_payload(body)


@given(
    st.lists(
        st.one_of(
            st.text(max_size=20).map(lambda t: "4" + t.replace("\x1e", "")), st.binary(max_size=20)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_payload_roundtrip_property(records: list[str | bytes]) -> None:
    decoded = decode_payload(encode_payload(records))
    expected = [r[1:] if isinstance(r, str) else r for r in records]
    assert [p.data for p in decoded] == expected


def test_handshake_round_trip() -> None:
    from cowrite.protocol.engineio import Handshake

    sent = Handshake("abc", 25.0, 20.0, 1_000_000, ("websocket",))
    text = sent.encode()
    assert text.startswith("0{") and '"pingInterval":25000' in text
    assert Handshake.decode(text[1:]) == sent
    assert Handshake.decode('{"sid":"s","pingInterval":1,"pingTimeout":2}').max_payload == 1_000_000
    for bad in ("", "[]", '{"sid":"s"}', '{"sid":"s","pingInterval":"x","pingTimeout":1}'):
        with pytest.raises(ProtocolError):
            Handshake.decode(bad)
