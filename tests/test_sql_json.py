"""The SQL repositories' JSON columns are written as ``json.dumps`` writes them.

``_json_list`` and ``_json_map`` skip the encoder ``json.dumps`` builds per call when
every item is a string; what they store must stay byte-for-byte what ``json.dumps``
stores, so rows written before and after read back alike, and stay comparable in SQL.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from halomail.tickets._sql import _json_ints, _json_list, _json_map

# Every code point, surrogates included: json quotes a lone surrogate as \\udXXX.
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF))


@given(st.lists(_TEXT, max_size=6))
def test_a_list_of_strings_is_stored_as_json_dumps_writes_it(values: list[str]) -> None:
    """Addresses, references: any strings, from a list or a tuple."""
    assert _json_list(values) == json.dumps(values)
    assert _json_list(tuple(values)) == json.dumps(values)


@given(st.dictionaries(_TEXT, _TEXT, max_size=6))
def test_a_map_of_strings_is_stored_as_json_dumps_writes_it(values: dict[str, str]) -> None:
    """Custom fields and asset values: any string keys and values."""
    assert _json_map(values) == json.dumps(values)


@given(st.lists(st.integers(), max_size=6))
def test_ids_are_stored_as_json_dumps_writes_them(values: list[int]) -> None:
    """A ticket's asset ids, none or several."""
    assert _json_ints(values) == json.dumps(values)


def test_values_that_are_not_strings_still_go_through_json_dumps() -> None:
    """A host may hand a number where a string is typed; it is stored as json stores it."""
    assert _json_list(["a", 1]) == '["a", 1]'  # type: ignore[list-item]
    assert _json_map({"seats": 3}) == '{"seats": 3}'  # type: ignore[dict-item]
