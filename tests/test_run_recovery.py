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

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.io import OWNER_FILE, clean_stale_staging
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import Run

RECIPE = (
    '[run]\nname = "rec"\n[data]\ndataset = "tiny"\n[data.synthetic]\nsymbols = 3\nbars = 200\n'
    '[model]\nname = "linear"\n'
)


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
        f"(.staging-model-0a1b, model, predictions.parquet) and redoing it"
    )
    assert split_run.has_stage("train") and not stale.exists()
    assert not (split_run.path / "model" / "model.txt").exists()
    assert runner.invoke(app, ["backtest", "--run", str(split_run.path), "-q"]).exit_code == 0


def test_a_committed_train_stage_is_never_redone(runner, split_run):
    assert runner.invoke(app, ["train", "--run", str(split_run.path), "-q"]).exit_code == 0
    again = runner.invoke(app, ["train", "--run", str(split_run.path)])
    assert again.exit_code == 2
    assert again.stderr.splitlines() == [
        f"error: run {split_run.id} already has a model; runs are never overwritten — "
        "start a new one with `qfactory train --recipe R`"
    ]


def test_backtest_needs_a_committed_train_and_redoes_a_killed_backtest(runner, split_run):
    (split_run.path / "predictions.parquet").write_bytes(b"uncommitted")
    early = runner.invoke(app, ["backtest", "--run", str(split_run.path)])
    assert early.exit_code == 2
    assert early.stderr.splitlines() == [
        f"error: run {split_run.id} has no committed train stage; "
        f"train it first with `qfactory train --run {split_run.id}`"
    ]
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
    script = (
        "import sys, time; from pathlib import Path; from quant_cli.io import staged_dir\n"
        "with staged_dir(Path(sys.argv[1]) / 'model') as s:\n"
        "    (s / 'part').write_text('x'); print('ready', flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        (staging,) = tmp_path.glob(".staging-model-*")
        assert clean_stale_staging(tmp_path) == [] and staging.exists()  # its writer is alive: untouched
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert clean_stale_staging(tmp_path) == [staging] and not staging.exists()
    assert not (tmp_path / "model").exists()


@pytest.fixture
def small_split_run(tmp_path) -> str:
    write_store(tmp_path / "data", "p", generate(symbols=3, bars=200, seed=1), "first")
    recipe = load_recipe(None, ['data.dataset="p"', 'features.sets=["core"]', "model.params.n_estimators=5"])
    return str(stages.new_split_run(recipe, tmp_path / "data", tmp_path / "runs").path)


@pytest.mark.parametrize(
    ("file", "text", "what"),
    [
        ("manifest.json", "garbage", "manifest.json is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ("manifest.json", "[]", "manifest.json is not a JSON object"),
        (
            "split/pipeline.json",
            "garbage",
            "split/pipeline.json is not valid JSON (Expecting value: line 1 column 1 (char 0))",
        ),
    ],
)
def test_a_damaged_run_file_is_one_line_not_an_unexpected_failure(runner, small_split_run, file, text, what):
    (Path(small_split_run) / file).write_text(text)
    result = runner.invoke(app, ["train", "--run", small_split_run])
    assert result.exit_code == 2, result.output
    run_id = Path(small_split_run).name
    assert result.stderr.splitlines() == [
        f"error: run {run_id}: {what}; the run is damaged, start a new one with `qfactory train --recipe R`"
    ]


def test_run_latest_skips_a_damaged_run(runner, tmp_path, small_split_run):
    damaged = tmp_path / "runs" / "zz-damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("garbage")
    result = runner.invoke(app, ["train", "--run", "latest", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == small_split_run


def test_a_damaged_delta_log_is_one_line(runner, tmp_path):
    write_store(tmp_path / "data", "q", generate(symbols=2, bars=30, seed=1), "first")
    log = tmp_path / "data" / "q" / "bars" / "_delta_log" / "00000000000000000000.json"
    log.write_text("garbage")
    result = runner.invoke(app, ["data", "show", "q"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: dataset 'q': its Delta table at {log.parent.parent} cannot be read (")
    assert line.endswith(
        f"restore its _delta_log from a backup, or delete {log.parent.parent.parent} and ingest it again"
    )


def test_a_damaged_run_parquet_is_one_line(runner, small_split_run):
    (Path(small_split_run) / "split" / "rows.parquet").write_text("garbage")
    result = runner.invoke(app, ["train", "--run", small_split_run])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"error: run {Path(small_split_run).name}: split/rows.parquet is not a readable parquet file ("
    )
    assert line.endswith("; the run is damaged, start a new one with `qfactory train --recipe R`")


def test_a_damaged_predictions_file_is_one_line(runner, small_split_run):
    assert runner.invoke(app, ["train", "--run", small_split_run, "-q"]).exit_code == 0
    (Path(small_split_run) / "predictions.parquet").write_text("garbage")
    result = runner.invoke(app, ["backtest", "--run", small_split_run])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0].startswith(
        f"error: run {Path(small_split_run).name}: predictions.parquet is not a readable parquet file ("
    )


@pytest.mark.parametrize(
    ("damage", "commands"),
    [
        ("spec.json", ["features"]),  # train --run reads only the table
        ("table/part-00000.parquet", ["features", "train"]),
    ],
)
def test_a_damaged_cached_feature_version_is_one_line(runner, tmp_path, small_split_run, damage, commands):
    (folder,) = (tmp_path / "data" / "p" / "features").iterdir()
    (folder / damage).write_text("garbage")
    calls = {
        "train": ["train", "--run", small_split_run],
        "features": ["features", "--recipe", str(Path(small_split_run) / "recipe.toml")],
    }
    for args in (calls[c] for c in commands):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        (line,) = [text for text in result.stderr.splitlines() if text.startswith("error")]  # after progress lines
        assert line.startswith(f"error: feature version {folder.name} is damaged ({damage}: ")
        assert line.endswith(f"delete {folder} and rerun the command (the version is rebuilt)")
