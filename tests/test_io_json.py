"""The one bounded JSON reader every file read back goes through (quant_cli.io.read_json)."""

from __future__ import annotations

import pytest

from quant_cli.io import MAX_JSON_DEPTH, JSONLimitError, json_depth, parse_json, read_json


def test_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": [1, {"b": "[[[[\\"{{"}]}') == 3
    assert json_depth(b'"just a string"') == 0


def test_deep_nesting_is_a_value_error_not_a_recursion_error():
    with pytest.raises(JSONLimitError, match="200,000 levels deep"):
        parse_json("[" * 200_000 + "]" * 200_000)
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


def test_size_cap_refuses_before_reading_whole(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"x": "' + "a" * 5000 + '"}')
    with pytest.raises(JSONLimitError, match="byte limit"):
        read_json(path, max_bytes=1000)
    assert read_json(path)["x"] == "a" * 5000


def test_plain_json_round_trips(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": [1, 2.5, null, "x\\"y"], "b": {"c": true}}')
    assert read_json(path) == {"a": [1, 2.5, None, 'x"y'], "b": {"c": True}}
