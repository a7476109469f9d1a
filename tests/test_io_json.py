"""The one bounded JSON reader every file read back goes through (quant_cli.io.read_json)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.io import MAX_JSON_DEPTH, JSONLimitError, json_depth, parse_json, read_json, write_json_atomic


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


SMALL = """
[run]
name = "perm"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 6
bars = 300
[model.params]
n_estimators = 20
min_data_in_leaf = 20
[train]
threads = 1
"""


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_ingest_and_run_outputs_are_readable_by_group_and_others(runner: CliRunner, umask_022) -> None:
    Path("small.toml").write_text(SMALL)
    result = runner.invoke(app, ["run", "--recipe", "small.toml", "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    for root in (run, Path("data") / "syn"):
        modes = _modes(root)
        files = {k: m for k, m in modes.items() if (root / k).is_file()}
        dirs = {k: m for k, m in modes.items() if (root / k).is_dir()}
        assert files and dirs
        assert {k: oct(m) for k, m in files.items() if m != 0o644} == {}, root
        assert {k: oct(m) for k, m in dirs.items() if m != 0o755} == {}, root


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_atomic_json_write_follows_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o600
