"""``inputs.load_storable_json`` walks a value for unstorable strings and integers only when its text could hold
one (``_MAYBE_UNSTORABLE``): a property over random JSON (NULs, surrogate halves and pairs, integers around the
64-bit bounds, in keys and values, escaped or not) that the shortcut refuses exactly what the full walk refuses,
with the same fields; and the depth bound checked without a walk when the brackets cannot exceed it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth.inputs import (
    INT64_MAX,
    INT64_MIN,
    InvalidJSON,
    NotJSON,
    UnstorableValue,
    _depth_exceeds,
    bad_json_fields,
    load_json,
    load_storable_json,
)

texts = st.lists(st.sampled_from(["a", "é", "\x00", "\ud800", "\udfff", "\ud83d\ude00", "\\", "u", "0", "9", "\n"]),
                max_size=6).map("".join)
integers = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN - 1,
                                                                      INT64_MAX + 1, 10**18, 10**19]))
scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(allow_nan=False, allow_infinity=False), texts)
values = st.recursive(scalars, lambda children: st.one_of(st.lists(children, max_size=4),
                                                          st.dictionaries(texts, children, max_size=4)),
                      max_leaves=12)


def _refused(data: bytes) -> dict[str, Any] | None:
    try:
        load_storable_json(data)
    except UnstorableValue as refusal:
        return dict(refusal.details["fields"])
    return None


@settings(max_examples=400, deadline=None)
@given(value=values, ascii_only=st.booleans())
def test_the_shortcut_refuses_exactly_what_the_walk_refuses(value: Any, ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if not ascii_only and any("\ud800" <= ch <= "\udfff" for ch in json.dumps(value, ensure_ascii=False)):
        with pytest.raises(NotJSON):  # an encoded surrogate is not UTF-8: refused before any walk
            load_storable_json(data)
        return
    expected = bad_json_fields(json.loads(data)) or None
    assert _refused(data) == expected


@settings(max_examples=400, deadline=None)
@given(value=values, max_depth=st.integers(1, 6))
def test_the_depth_is_walked_only_when_the_brackets_could_exceed_it(value: Any, max_depth: int) -> None:
    """A text with no more brackets than the bound skips the walk (``inputs._parse``): the same refusals."""
    data = json.dumps(value).encode()
    try:
        load_json(data, max_depth=max_depth)
        refused = False
    except InvalidJSON:
        refused = True
    assert refused == _depth_exceeds(json.loads(data), max_depth)
