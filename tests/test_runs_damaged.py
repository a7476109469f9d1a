"""Damaged JSON a run or the store reads back (a 200k-deep manifest.json, a damaged Delta commit log): one
damaged run, listed as damaged, never a crash of the whole runs home (quant_cli.io's bounded reader)."""

from __future__ import annotations

import json

import pytest

DEEP = "[" * 200_000 + "]" * 200_000
DEPTH = "nested 200,000 levels deep, over the limit of 100"
DAMAGED = (
    f"error: run deep-20260101T000000-0001: manifest.json is not valid JSON ({DEPTH}); "
    "the run is damaged, start a new one with `qfactory train --recipe R`"
)


@pytest.fixture
def deep_run(tmp_path):
    from runs_fakes import fake_run, stamp

    fake_run(tmp_path / "runs", "good-20260101T000000-0002", stamp(2))
    deep = fake_run(tmp_path / "runs", "deep-20260101T000000-0001", stamp(1))
    (deep / "manifest.json").write_text(DEEP)
    return deep


def test_runs_ls_lists_a_deep_manifest_as_damaged(runner, deep_run):
    from runs_fakes import ls_json

    rows = {row["run_id"]: row for row in ls_json(runner)}
    assert rows["deep-20260101T000000-0001"]["state"] == "damaged"
    assert "nested 200,000 levels deep" in rows["deep-20260101T000000-0001"]["problem"]
    assert rows["good-20260101T000000-0002"]["state"] == "ok"


def test_runs_show_of_a_deep_manifest_is_one_line_and_other_runs_still_show(runner, deep_run):
    from quant_cli.cli import app

    result = runner.invoke(app, ["runs", "show", deep_run.name])
    assert (result.exit_code, result.stderr.splitlines()) == (2, [DAMAGED])
    for ref in ("latest", "good-20260101T000000-0002"):
        shown = runner.invoke(app, ["runs", "show", ref, "--json"])
        assert shown.exit_code == 0 and json.loads(shown.stdout)["run_id"] == "good-20260101T000000-0002"


def test_runs_gc_with_a_deep_manifest_keeps_working(runner, deep_run):
    from quant_cli.cli import app

    result = runner.invoke(app, ["runs", "gc", "--keep", "1", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["kept"] == ["good-20260101T000000-0002"] and plan["removed"] == ["deep-20260101T000000-0001"]


def test_a_damaged_delta_commit_log_is_one_line(tmp_path):
    """The store's commit log goes through the same bounded reader (data/delta.commit_info)."""
    from quant_cli.data import delta
    from quant_cli.data.store import write_store
    from quant_cli.data.synthetic import generate
    from quant_cli.errors import DataError

    write_store(tmp_path / "data", "d", generate(symbols=2, bars=30, seed=1), "test")
    log = delta.table_dir(tmp_path / "data" / "d") / delta.LOG / f"{0:020d}.json"
    log.write_text(DEEP + "\n" + log.read_text())  # read before the commitInfo line
    with pytest.raises(DataError, match=r"commit log is damaged \(not valid JSON: nested 200,000 levels deep"):
        delta.commit_info(tmp_path / "data" / "d", 0)


TINY = """
[run]
name = "tiny"
[data]
dataset = "tiny"
source = "synthetic"
[data.synthetic]
symbols = 3
bars = 260
[label]
horizon = 3
[model]
name = "linear"
"""


def test_damaged_json_in_a_trained_run_is_one_line(runner, tmp_path):
    """metrics.json read back by `backtest --run`, model.json by `bundle --run`: exit 2, one line each."""
    from quant_cli.cli import app

    (tmp_path / "r.toml").write_text(TINY)
    trained = runner.invoke(app, ["train", "--recipe", str(tmp_path / "r.toml"), "--quiet"])
    assert trained.exit_code == 0, trained.stderr
    run = trained.stdout.strip()
    metrics = tmp_path / "runs" / run.rsplit("/", 1)[1] / "metrics.json"
    metrics.write_text(DEEP)
    result = runner.invoke(app, ["backtest", "--run", run])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"error: run {metrics.parent.name}: metrics.json is not valid JSON ({DEPTH}); "
        "the run is damaged, start a new one with `qfactory train --recipe R`"
    ]
    (metrics.parent / "model" / "model.json").write_text(DEEP)
    result = runner.invoke(app, ["bundle", "--run", run])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"error: the saved model at {metrics.parent / 'model'} is damaged (a JSON file is not valid: {DEPTH}); "
        "retrain it (`qfactory train --recipe R`)"
    ]
