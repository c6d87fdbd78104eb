"""The CNI plugin's JSON codec behaves exactly as the stdlib's ``json``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni import lean_json

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_dumps_writes_what_json_writes_and_loads_reads_it_back(value) -> None:
    assert lean_json.dumps(value) == json.dumps(value)
    assert lean_json.loads(" \n" + json.dumps(value) + "\t") == json.loads(json.dumps(value))


@given(st.text(max_size=40))
def test_any_text_is_read_as_json_reads_it_or_refused_with_its_error(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError as e:
        with pytest.raises(ValueError, match=str(e).split(":")[0]):
            lean_json.loads(text)
    else:
        assert lean_json.loads(text) == expected or expected != expected  # NaN is not equal to itself


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{} x", "nul", '"\\x"', '{"a": 1}}'])
def test_malformed_documents_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        lean_json.loads(text)


def test_unserializable_objects_are_type_errors() -> None:
    with pytest.raises(TypeError, match="set"):
        lean_json.dumps({"a": {1}})
