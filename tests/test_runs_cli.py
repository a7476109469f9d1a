"""`qfactory runs ls / show / compare`: what is listed, how status is derived, and the one-line errors."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from runs_fakes import fake_run, stamp, trial
from runs_fakes import ls_json as _ls

from quant_cli.cli import app
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import Run, create_run

RUNS = Path("runs")


def test_ls_lists_newest_first_with_identity_metrics_and_status(runner):
    fake_run(RUNS, "a-20260101T000000-0001", stamp(1), backtest=trial(1.2))
    fake_run(RUNS, "b-20260101T000000-0002", stamp(2), model="xgboost", stages=("split", "train"), test_ic=0.05)
    rows = _ls(runner)
    assert [r["run_id"] for r in rows] == ["b-20260101T000000-0002", "a-20260101T000000-0001"]
    newest, oldest = rows
    assert (newest["name"], newest["dataset"], newest["model"], newest["test_ic"]) == ("b", "d", "xgboost", 0.05)
    assert newest["committed"] == ["split", "train"] and newest["state"] == "ok" and newest["sharpe"] is None
    assert oldest["sharpe"] == 1.2 and oldest["n_trials"] == 1 and oldest["age_seconds"] > 0
    table = runner.invoke(app, ["runs", "ls"]).stdout.splitlines()
    assert table[0].split() == [
        "RUN",
        "NAME",
        "DATASET",
        "MODEL",
        "VAL_IC",
        "TEST_IC",
        "SHARPE",
        "DSR",
        "N",
        "STATUS",
        "AGE",
    ]
    assert table[1].split()[:6] == ["b-20260101T000000-0002", "b", "d", "xgboost", "0.0300", "0.0500"]
    assert "split+train+backtest" in table[2]


def test_ls_filters_and_limit(runner):
    fake_run(RUNS, "a-20260101T000000-0001", stamp(1), dataset="x", backtest=trial(1.0))
    fake_run(RUNS, "b-20260101T000000-0002", stamp(2), dataset="y", model="catboost", stages=("split",))
    fake_run(RUNS, "c-20260101T000000-0003", stamp(3), dataset="x", model="catboost", stages=("split", "train"))
    ids = lambda *args: [r["run_id"][0] for r in _ls(runner, *args)]  # noqa: E731
    assert ids("--dataset", "x") == ["c", "a"]
    assert ids("--model", "catboost") == ["c"]  # b never trained: no model
    assert ids("--status", "backtest") == ["a"]  # a committed stage
    assert ids("--status", "ok", "--limit", "2") == ["c", "b"]
    assert ids("--dataset", "none") == []


def test_damaged_runs_are_listed_never_crash(runner):
    fake_run(RUNS, "good-20260101T000000-0001", stamp(1))
    (RUNS / "bad-20260101T000000-0002").mkdir()
    (RUNS / "bad-20260101T000000-0002" / "manifest.json").write_text("{not json")
    fake_run(RUNS, "list-20260101T000000-0003", stamp(3))
    (RUNS / "list-20260101T000000-0003" / "metrics.json").write_text("[1, 2]")
    (RUNS / "notarun").mkdir()  # no manifest.json: not listed
    rows = {r["run_id"]: r for r in _ls(runner)}
    assert set(rows) == {"good-20260101T000000-0001", "bad-20260101T000000-0002", "list-20260101T000000-0003"}
    assert rows["bad-20260101T000000-0002"]["state"] == "damaged"
    assert rows["bad-20260101T000000-0002"]["problem"].startswith("manifest.json is not valid JSON")
    assert rows["list-20260101T000000-0003"]["problem"] == "metrics.json is not a JSON object"
    assert [r["run_id"] for r in _ls(runner, "--status", "damaged")] == [
        "list-20260101T000000-0003",
        "bad-20260101T000000-0002",
    ]
    assert "damaged" in runner.invoke(app, ["runs", "ls"]).stdout


def test_failed_interrupted_and_running_stages(runner):
    fake_run(RUNS, "f-20260101T000000-0001", stamp(1), stages=("split", "train"))
    failed = Run(RUNS / "f-20260101T000000-0001")
    with pytest.raises(ValueError), failed.stage("backtest"):
        raise ValueError("boom")
    killed = fake_run(RUNS, "k-20260101T000000-0002", stamp(2), stages=("split",))
    (killed / "model").mkdir()  # train outputs without its manifest entry: a killed process
    live = fake_run(RUNS, "l-20260101T000000-0003", stamp(3))
    (live / ".staging-backtest-abc").mkdir()
    (live / ".staging-backtest-abc" / ".qfactory-owner.json").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    )
    rows = {r["run_id"][0]: r for r in _ls(runner)}
    assert (rows["f"]["state"], rows["f"]["failed"]) == ("failed", ["backtest"])
    assert (rows["k"]["state"], rows["k"]["interrupted"]) == ("interrupted", ["train"])
    assert rows["l"]["state"] == "running"
    assert [r["run_id"][0] for r in _ls(runner, "--status", "failed")] == ["f"]
    assert "split+train failed:backtest" in runner.invoke(app, ["runs", "ls"]).stdout


def test_a_stage_killed_before_it_wrote_anything_is_interrupted_and_a_live_one_running(runner, tmp_path):
    """Was 'ok' with the last committed stage: a train killed during the fit leaves no output and
    no staging folder. The manifest says a stage is running, and by which process."""
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    killed = Run(fake_run(RUNS, "k-20260101T000000-0001", stamp(1), stages=("split",)))
    killed.update_manifest(
        stages={
            "train": {
                "status": "running",
                "pid": int(gone.stdout),
                "host": socket.gethostname(),
                "started": "2026-01-01T00:00:00+00:00",
            }
        }
    )
    with create_run(tmp_path, load_recipe(None)) as live:
        pass
    with live.stage("split"):
        assert live.manifest()["stages"]["split"]["status"] == "running"
        rows = {r["run_id"][0]: r for r in _ls(runner)}
        assert (rows["k"]["state"], rows["k"]["interrupted"], rows["k"]["committed"]) == (
            "interrupted",
            ["train"],
            ["split"],
        )
        assert [r["state"] for r in _ls(runner, "--runs-dir", str(tmp_path))] == ["running"]
    assert live.has_stage("split") and [r["state"] for r in _ls(runner, "--runs-dir", str(tmp_path))] == ["ok"]
    killed.begin_stage("train")  # a dead process's running entry is no commitment: the stage is redone
    with killed.stage("train"):
        pass
    assert killed.has_stage("train")


def test_a_stage_that_raises_is_recorded_failed_and_redone_later(tmp_path):
    with create_run(tmp_path, load_recipe(None)) as run:
        pass
    with pytest.raises(KeyboardInterrupt), run.stage("split"):
        raise KeyboardInterrupt
    assert run.manifest()["stages"]["split"]["status"] == "interrupted" and not run.has_stage("split")
    run.begin_stage("split")  # not committed: the next command may redo it
    with run.stage("split"):
        pass
    assert run.has_stage("split")


def test_unknown_run_damaged_run_and_bad_status_are_one_line(runner):
    result = runner.invoke(app, ["runs", "show", "nope"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: run 'nope': no run directory with a manifest.json there or under "
        f"{RUNS.resolve()}; pass a run path, a run id, or 'latest'"
    ]
    (RUNS / "bad").mkdir(parents=True)
    (RUNS / "bad" / "manifest.json").write_text("{not json")
    for command in (["show", "bad"], ["compare", "bad", "bad"]):
        result = runner.invoke(app, ["runs", *command])
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            "error: run bad: manifest.json is not valid JSON (Expecting property "
            "name enclosed in double quotes: line 1 column 2 (char 1)); "
            "the run is damaged, start a new one with `qfactory train --recipe R`"
        ]
    result = runner.invoke(app, ["runs", "ls", "--status", "faild", "--json"])
    assert result.exit_code == 2
    message = (
        "--status 'faild': unknown (did you mean 'failed'?); use a state "
        "('damaged', 'running', 'failed', 'interrupted', 'ok') "
        "or a stage name ('ingest', 'split', 'pretrain', 'train', 'backtest', 'walkforward', "
        "'bundle', 'tune') to list runs with that stage committed"
    )
    assert json.loads(result.stdout) == {"error": message, "kind": "RunError", "exit_code": 2}
    result = runner.invoke(app, ["runs", "compare", "latest"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: runs compare: needs at least two runs, e.g. `qfactory runs compare RUN_A RUN_B`"
    ]


def test_show_summarises_manifest_stages_metrics_and_ledger(runner):
    fake_run(RUNS, "s-20260101T000000-0001", stamp(1), backtest=trial(1.5, skew=-0.3, kurtosis=5.0))
    result = runner.invoke(app, ["runs", "show", "latest", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["run_id"] == "s-20260101T000000-0001" and info["dataset"] == "d" and info["seed"] == 42
    assert info["stages"]["train"]["seconds"] == 1.5 and info["metrics"]["test"]["ic"] == 0.02
    (entry,) = info["ledger"]
    assert entry["kind"] == "backtest" and entry["n_trials"] == 1 and entry["n_trials_at_creation"] == 1
    assert entry["deflated_sharpe"] == pytest.approx(entry["psr"])  # one trial: nothing to deflate
    text = runner.invoke(app, ["runs", "show", "s-20260101T000000-0001"]).stdout
    assert "status: split+train+backtest" in text and "trial ledger" in text and "test.ic" in text


def test_compare_puts_metrics_side_by_side_and_lists_recipe_differences(runner):
    fake_run(
        RUNS,
        "a-20260101T000000-0001",
        stamp(1),
        backtest=trial(1.0),
        test_ic=0.01,
        recipe='[run]\nname = "a"\n[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 7\nlearning_rate = 0.1\n',
    )
    fake_run(
        RUNS,
        "b-20260101T000000-0002",
        stamp(2),
        test_ic=0.04,
        recipe='[run]\nname = "b"\n[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 31\nlearning_rate = 0.1\n',
    )
    result = runner.invoke(app, ["runs", "compare", "a-20260101T000000-0001", "latest", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["runs"] == ["a-20260101T000000-0001", "b-20260101T000000-0002"]
    assert out["metrics"]["test.ic"] == [0.01, 0.04]
    assert out["metrics"]["backtest.sharpe"] == [1.0, None]
    assert out["metrics"]["ledger.backtest.n_trials"] == [1, None]
    assert out["recipe"] == {
        "model.params.num_leaves": [7, 31],
        "run.name": ["a", "b"],
    }  # learning_rate equal: not listed
    text = runner.invoke(app, ["runs", "compare", "a-20260101T000000-0001", "b-20260101T000000-0002"]).stdout
    assert text.splitlines()[:2] == ["run1 = a-20260101T000000-0001", "run2 = b-20260101T000000-0002"]
    assert any(line.split() == ["model.params.num_leaves", "7", "31"] for line in text.splitlines())


def test_show_of_a_run_with_damaged_metrics_is_one_line(runner):
    fake_run(RUNS, "m-20260101T000000-0001", stamp(1))
    (RUNS / "m-20260101T000000-0001" / "metrics.json").write_text('"text"')
    result = runner.invoke(app, ["runs", "show", "m-20260101T000000-0001"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: run m-20260101T000000-0001: metrics.json is not a JSON object; "
        "the run is damaged, start a new one with `qfactory train --recipe R`"
    ]
