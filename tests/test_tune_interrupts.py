"""`qfactory tune` interrupted: Ctrl-C, a real `kill -9` mid-trial or mid-refit; the study continues
cleanly and `tune --run RUN --refit` redoes a killed refit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs_fakes import ls_json
from tune_helpers import RECIPE, read_json_line, write_recipe

from quant_cli.cli import app
from quant_cli.recipe import load_recipe
from quant_cli.tune import objective
from quant_cli.tune.study import tune_new


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)


def test_ctrl_c_marks_the_trial_in_flight_failed_and_the_study_continues(recipe_file, tmp_path, monkeypatch):
    recipe = load_recipe(recipe_file, ["tune.refit=false"])
    real = objective.evaluate

    def interrupted(task):
        if task.number == 1:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(objective, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=3)
    monkeypatch.setattr(objective, "evaluate", real)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    from quant_cli.runs.directory import Run
    from quant_cli.tune.study import tune_existing

    result = tune_existing(Run(run), tmp_path / "data", tmp_path / "runs", trials=1)
    assert result.trials["state"].to_list()[:2] == ["complete", "fail"] and result.trials.height == 3


def test_kill_9_leaves_a_study_that_continues_cleanly(runner, recipe_file, tmp_path):
    """A real `kill -9` of a tune process in the middle of a trial; `tune --run` marks that trial
    failed and carries on."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    recipe_file.write_text(RECIPE.replace("n_estimators = 40", "n_estimators = 150"), encoding="utf-8")
    code = "from quant_cli.cli import app; app()"
    args = [
        "tune",
        "--recipe",
        str(recipe_file),
        "--trials",
        "500",
        "--set",
        "tune.refit=false",
        "--set",
        "tune.pruner='none'",
        "-q",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        study = _wait_for_states(tmp_path / "runs", proc, ["COMPLETE", "RUNNING"], timeout=120)
        (during,) = ls_json(runner)  # the study is the run's tune stage: running while its process lives
        assert during["state"] == "running" and during["committed"] == ["split"]
        # `runs ls` took a while: kill only once a trial is running again, so the kill lands mid-trial
        _wait_for_last_running(study, proc, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (killed,) = ls_json(runner)
    assert (killed["state"], killed["interrupted"]) == ("interrupted", ["tune"])
    assert "split interrupted:tune" in runner.invoke(app, ["runs", "ls"]).stdout
    before = _states(study)
    assert before[-1] == "RUNNING"
    result = runner.invoke(app, ["tune", "--run", str(study.parents[1]), "--trials", "1"])
    assert result.exit_code == 0, result.output
    assert f"tune: trial {len(before) - 1} was interrupted (its process stopped); marked failed" in result.stderr
    assert _states(study) == [*before[:-1], "FAIL", "COMPLETE"]
    (continued,) = ls_json(runner)
    assert continued["state"] == "ok" and continued["committed"] == ["split", "tune"]


def test_a_killed_refit_is_redone_by_tune_run_refit(runner, recipe_file, tmp_path):
    """A real `kill -9` while the best trial is being refit (its run still staging): the tune run is
    `interrupted:tune`; `tune --run RUN --refit` refits it without new trials, once."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "from quant_cli.cli import app; app()"
    args = ["tune", "--recipe", str(recipe_file), "--trials", "2", "-q"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=tmp_path, **pipes)
    try:
        refitting = lambda: any((tmp_path / "runs").glob(".staging-tn-best-*"))  # noqa: E731
        _wait_for(refitting, proc, "the refit run to start", timeout=180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (killed,) = ls_json(runner)
    assert (killed["state"], killed["interrupted"]) == ("interrupted", ["tune"])
    assert runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--refit"]).stderr.strip() == (
        "error: --refit refits the best trial of an existing tune run: pass it with --run RUN, not --recipe"
    )
    result = runner.invoke(app, ["tune", "--run", killed["path"], "--refit", "--json"])
    assert result.exit_code == 0, result.output
    payload = read_json_line(result.stdout)
    assert payload["added"] == 0 and payload["trials"] == 2 and payload["refit_run"]
    assert (tmp_path / "runs" / payload["refit_run"] / "backtest").is_dir()
    rows = {row["run_id"]: row for row in ls_json(runner)}
    assert rows[killed["run_id"]]["state"] == "ok" and rows[killed["run_id"]]["committed"] == ["split", "tune"]
    again = runner.invoke(app, ["tune", "--run", killed["path"], "--refit", "--json"])  # refit once: the same run
    assert again.exit_code == 0 and read_json_line(again.stdout)["refit_run"] == payload["refit_run"]


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_for_states(runs: Path, proc: subprocess.Popen, states: list[str], timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        for study in runs.glob("*/tune/study.sqlite"):
            if _states(study)[: len(states)] == states:
                return study
        time.sleep(0.05)
    raise AssertionError(f"the tune process did not reach trial states {states} in time")


def _wait_for_last_running(study: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        if _states(study)[-1:] == ["RUNNING"]:
            return
        time.sleep(0.005)
    raise AssertionError("the tune process did not start another trial in time")


def _states(study: Path) -> list[str]:
    try:
        with sqlite3.connect(study, timeout=5) as db:
            return [row[0] for row in db.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # the schema is not created yet
        return []


def test_continuing_a_run_that_is_not_a_tune_run_is_one_line(runner, recipe_file):
    split = runner.invoke(app, ["split", "--recipe", str(recipe_file)])
    assert split.exit_code == 0, split.output
    run = Path(split.stdout.strip())
    result = runner.invoke(app, ["tune", "--run", str(run)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: run {run.name} is not a tune run (its manifest has no 'tune' "
        "entry); start one with `qfactory tune --recipe R`"
    )
