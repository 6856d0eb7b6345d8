"""Operations are stored and given back exactly, binary parts included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrite.core.opcodec import decode_operation, encode_operation
from cowrite.errors import ProtocolError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | st.binary(max_size=16),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.text(max_size=4).filter(lambda k: k != "_placeholder"), c, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_roundtrip(value: object) -> None:
    assert decode_operation(encode_operation(value)) == value


def test_every_byte_value() -> None:
    blob = bytes(range(256))
    assert decode_operation(encode_operation({"update": blob, "n": [blob, b""]})) == {
        "update": blob,
        "n": [blob, b""],
    }


def test_not_json_is_refused() -> None:
    with pytest.raises(ProtocolError):
        encode_operation({1: b"x"})
