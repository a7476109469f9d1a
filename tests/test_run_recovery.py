"""§3: a stage is committed by its manifest entry, written last; a killed stage is redone, and staging
folders of dead processes are cleaned by the next command — never those of a live one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quant_cli.cli import app
from quant_cli.io import OWNER_FILE, clean_stale_staging
from quant_cli.runs.directory import Run

RECIPE = ('[run]\nname = "rec"\n[data]\ndataset = "tiny"\n[data.synthetic]\nsymbols = 3\nbars = 200\n'
          '[model]\nname = "linear"\n')


@pytest.fixture
def split_run(runner, tmp_path) -> Run:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    assert runner.invoke(app, ["ingest", "--recipe", str(path), "--source", "synthetic", "-q"]).exit_code == 0
    result = runner.invoke(app, ["split", "--recipe", str(path), "-q"])
    assert result.exit_code == 0, result.output
    return Run(Path(result.stdout.strip()))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging(folder: Path, name: str, pid: int | None) -> Path:
    staging = folder / f".staging-{name}"
    staging.mkdir(parents=True)
    (staging / "part.bin").write_bytes(b"half")
    if pid is not None:
        (staging / OWNER_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    return staging


def test_a_killed_train_stage_is_redone(runner, split_run):
    (split_run.path / "model").mkdir()  # as left by a train killed after saving, before its manifest entry
    (split_run.path / "model" / "model.txt").write_text("half a model")
    (split_run.path / "predictions.parquet").write_bytes(b"junk")
    stale = _staging(split_run.path, "model-0a1b", _dead_pid())
    result = runner.invoke(app, ["train", "--run", str(split_run.path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"notice: run {split_run.id}: the train stage never committed (interrupted); removed its leftovers "
        f"(.staging-model-0a1b, model, predictions.parquet) and redoing it")
    assert split_run.has_stage("train") and not stale.exists()
    assert not (split_run.path / "model" / "model.txt").exists()
    assert runner.invoke(app, ["backtest", "--run", str(split_run.path), "-q"]).exit_code == 0


def test_a_committed_train_stage_is_never_redone(runner, split_run):
    assert runner.invoke(app, ["train", "--run", str(split_run.path), "-q"]).exit_code == 0
    again = runner.invoke(app, ["train", "--run", str(split_run.path)])
    assert again.exit_code == 2
    assert again.stderr.splitlines() == [f"error: run {split_run.id} already has a model; runs are never overwritten — "
                                         "start a new one with `qfactory train --recipe R`"]


def test_backtest_needs_a_committed_train_and_redoes_a_killed_backtest(runner, split_run):
    (split_run.path / "predictions.parquet").write_bytes(b"uncommitted")
    early = runner.invoke(app, ["backtest", "--run", str(split_run.path)])
    assert early.exit_code == 2
    assert early.stderr.splitlines() == [f"error: run {split_run.id} has no committed train stage; "
                                         f"train it first with `qfactory train --run {split_run.id}`"]
    assert runner.invoke(app, ["train", "--run", str(split_run.path), "-q"]).exit_code == 0
    (split_run.path / "backtest").mkdir()
    (split_run.path / "backtest" / "equity.parquet").write_bytes(b"half")
    result = runner.invoke(app, ["backtest", "--run", str(split_run.path)])
    assert result.exit_code == 0, result.output
    assert "the backtest stage never committed (interrupted); removed its leftovers (backtest)" in result.stderr
    assert split_run.has_stage("backtest")
    again = runner.invoke(app, ["backtest", "--run", str(split_run.path)])
    assert again.exit_code == 2 and "already has a backtest" in again.stderr


def test_stale_run_staging_of_dead_processes_is_cleaned_by_the_next_run(runner, split_run, tmp_path):
    runs = split_run.path.parent
    dead = _staging(runs, "rec-dead", _dead_pid())
    live = _staging(runs, "rec-live", os.getpid())
    fresh_orphan = _staging(runs, "rec-fresh", None)  # killed before writing its owner file: too young to judge
    old_orphan = _staging(runs, "rec-old", None)
    os.utime(old_orphan, (time.time() - 7200, time.time() - 7200))
    result = runner.invoke(app, ["split", "--recipe", str(tmp_path / "r.toml"), "-q"])
    assert result.exit_code == 0, result.output
    assert not dead.exists() and not old_orphan.exists()
    assert live.exists() and fresh_orphan.exists()
    assert not list(Path(result.stdout.strip()).rglob(OWNER_FILE))  # the owner file never lands in a run


def test_a_kill_9_mid_stage_leaves_staging_that_the_next_command_removes(tmp_path):
    script = ("import sys, time; from pathlib import Path; from quant_cli.io import staged_dir\n"
              "with staged_dir(Path(sys.argv[1]) / 'model') as s:\n"
              "    (s / 'part').write_text('x'); print('ready', flush=True); time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        staging, = tmp_path.glob(".staging-model-*")
        assert clean_stale_staging(tmp_path) == [] and staging.exists()  # its writer is alive: untouched
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert clean_stale_staging(tmp_path) == [staging] and not staging.exists()
    assert not (tmp_path / "model").exists()
