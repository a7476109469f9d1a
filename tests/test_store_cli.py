"""`qfactory data ls / show / vacuum / convert`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data import store
from quant_cli.errors import DataError
from quant_cli.io import write_json_atomic


def _ingest(runner: CliRunner, *args: str) -> None:
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "demo", "-q", *args])
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def three_versions(runner: CliRunner) -> None:
    _ingest(runner, "--symbols", "3", "--bars", "30")
    _ingest(runner, "--symbols", "4", "--bars", "40")
    _ingest(runner, "--symbols", "2", "--bars", "50")


def test_ls_and_show(runner: CliRunner, three_versions: None) -> None:
    (row,) = json.loads(runner.invoke(app, ["data", "ls", "--json"]).stdout)
    assert (row["dataset"], row["version"], row["rows"], row["symbols"], row["layout"]) == ("demo", 2, 100, 2, "delta")
    assert row["source"].startswith("synthetic(symbols=2")
    versions = json.loads(runner.invoke(app, ["data", "show", "demo", "--json"]).stdout)
    assert [(v["version"], v["operation"], v["rows"], v["symbols"], v["available"]) for v in versions] == [
        (0, "replace", 90, 3, True),
        (1, "replace", 160, 4, True),
        (2, "replace", 100, 2, True),
    ]
    text = runner.invoke(app, ["data", "show", "demo"]).stdout.splitlines()
    assert text[0].split()[:4] == ["VERSION", "WHEN", "OPERATION", "ROWS"] and len(text) == 4


def test_vacuum_keeps_versions_that_runs_reference(runner: CliRunner, three_versions: None) -> None:
    write_json_atomic(
        Path("runs") / "r-1" / "manifest.json", {"dataset": {"name": "demo", "version": 0, "content_hash": "x"}}
    )
    write_json_atomic(
        Path("runs") / "r-2" / "manifest.json", {"dataset": {"name": "other", "version": 1, "content_hash": "y"}}
    )
    result = runner.invoke(app, ["data", "vacuum", "demo", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["kept_versions"], payload["referenced_by_runs"], payload["unavailable_versions"]) == (
        [0, 2],
        [0],
        [1],
    )
    assert payload["removed_files"] == 4
    assert store.pin(Path("data"), "demo", version=0).load_bars().height == 90
    with pytest.raises(DataError, match="version 1 was vacuumed"):
        store.pin(Path("data"), "demo", version=1)
    result = runner.invoke(app, ["train", "--help"])  # unrelated commands still work
    assert result.exit_code == 0


def test_vacuum_dry_run_removes_nothing(runner: CliRunner, three_versions: None) -> None:
    payload = json.loads(runner.invoke(app, ["data", "vacuum", "demo", "--keep", "2", "--dry-run", "--json"]).stdout)
    assert payload["kept_versions"] == [1, 2] and payload["removed_files"] == 3
    assert store.pin(Path("data"), "demo", version=0).load_bars().height == 90


def test_errors_are_one_line(runner: CliRunner, three_versions: None) -> None:
    result = runner.invoke(app, ["data", "show", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: dataset 'nope' not found in ")
    result = runner.invoke(app, ["data", "vacuum", "demo", "--keep", "0"])
    assert result.stderr.strip() == "error: --keep 0: keep at least the latest version (--keep 1 or more)"


@pytest.mark.parametrize("command", ["ls", "show", "vacuum", "convert"])
def test_help_has_an_example(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, ["data", command, "--help"])
    assert result.exit_code == 0 and "Example: qfactory data " + command in result.stdout


def test_vacuum_does_not_call_an_already_vacuumed_version_kept(runner: CliRunner, three_versions: None) -> None:
    assert runner.invoke(app, ["data", "vacuum", "demo"]).exit_code == 0  # versions 0 and 1 go
    payload = json.loads(runner.invoke(app, ["data", "vacuum", "demo", "--keep", "3", "--json"]).stdout)
    assert (payload["kept_versions"], payload["unavailable_versions"]) == ([2], [0, 1])


def test_vacuum_passes_over_a_run_manifest_that_is_not_an_object(runner: CliRunner, three_versions: None) -> None:
    Path("runs/bad").mkdir(parents=True)
    Path("runs/bad/manifest.json").write_text("[]")
    write_json_atomic(
        Path("runs") / "r-1" / "manifest.json", {"dataset": {"name": "demo", "version": 0, "content_hash": "x"}}
    )
    result = runner.invoke(app, ["data", "vacuum", "demo", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["referenced_by_runs"] == [0]
