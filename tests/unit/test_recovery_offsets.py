"""The offset appended to remote-edit events (core/recovery.py), no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrite.core.recovery import MAX_OFFSET_CHARS, decode_offset, encode_offset


def test_round_trip() -> None:
    positions = {"a": 3, "b:c": 0, '{"x"}': 2**53, "名前": 7}
    text = encode_offset(positions)
    assert isinstance(text, str)
    assert decode_offset(text) == positions


@pytest.mark.parametrize(
    "text",
    [None, "", "Access denied", "[1,2]", "{", '{"a":"3"}', '{"a":-1}', '{"a":true}', "null"],
)
def test_anything_else_names_nothing(text: str | None) -> None:
    # The client keeps the last string argument of any event: not always ours.
    assert decode_offset(text) == {}


def test_bad_entries_are_dropped_and_huge_offsets_ignored() -> None:
    assert decode_offset('{"a":1,"b":1.5,"c":9007199254740993,"d":[1]}') == {"a": 1}
    huge = encode_offset({f"d{i}": i for i in range(MAX_OFFSET_CHARS // 8)})
    assert len(huge) > MAX_OFFSET_CHARS and decode_offset(huge) == {}


@given(st.text(max_size=200))
def test_never_raises(text: str) -> None:
    decode_offset(text)
