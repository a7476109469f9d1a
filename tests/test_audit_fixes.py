"""Bugs found by running the merged CLI as a hostile operator (issue 9 audit): each is exit 2 and
one `error:` line, never an 'unexpected failure'."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_cli import stages
from quant_cli.stages import split as split_stage
from quant_cli.cli import app
from quant_cli.data import catalog
from quant_cli.data.store import write_store
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.data.synthetic import generate
from quant_cli.pipeline.adjust import Adjustment, resolve
from quant_cli.report import CollectingReporter


@pytest.mark.parametrize(("flags", "line"), [
    (["--bars", "99999999999999999999"],
     "error: --bars 99999999999999999999: must be between 10 and 10000000 (data.synthetic.bars)"),
    (["--symbols", "99999999999999999999"],
     "error: --symbols 99999999999999999999: must be between 1 and 100000 (data.synthetic.symbols)"),
    (["--symbols", "100000", "--bars", "10000000"],
     "error: --symbols 100000 x --bars 10000000 = 1,000,000,000,000 bars is more than a synthetic panel "
     "may hold (50,000,000); pass fewer symbols or bars"),
    (["--seed", "-1"], "error: --seed -1: must be between 0 and 4294967295 (run.seed)"),
    (["--signal", "nan"], "error: --signal nan: must be between 0.0 and 1.0 (data.synthetic.signal)"),
])
def test_synthetic_ingest_flags_are_bounded_like_the_recipe_keys(runner, flags, line):
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "z", *flags])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]


def test_an_explicit_split_dividend_without_adj_close_says_prices_stay_raw():
    """`data.adjust = "split_dividend"` on bars with no adj_close column silently used raw prices."""
    bars = generate(symbols=2, bars=30, seed=3)
    reporter = CollectingReporter()
    assert resolve("split_dividend", bars, reporter) == Adjustment("none")
    assert reporter.texts("notice") == [
        "data.adjust = 'split_dividend', but the dataset has no adj_close column: every symbol uses raw prices "
        "(the run manifest records adjust mode 'none'); ingest a source with adj_close, or set data.adjust = \"none\""
    ]
    quiet = CollectingReporter()
    resolve(None, bars, quiet)  # the default asks for nothing, so it says nothing
    assert quiet.texts("notice") == []


def test_a_vacuum_during_a_split_keeps_the_version_the_split_pinned(tmp_path, monkeypatch):
    """A split pins version 0; while it builds features another job replaces the dataset and
    vacuums. The run in staging must already name its pinned version, or its files are deleted."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    write_store(data, "p", generate(symbols=3, bars=200, seed=1), "first")
    real_prepare = split_stage.prepare

    def prepare_while_others_write(recipe, snapshot, **kwargs):
        write_store(data, "p", generate(symbols=3, bars=200, seed=2), "second")  # version 1
        catalog.vacuum(data, "p", keep=1, runs_dir=runs)
        return real_prepare(recipe, snapshot, **kwargs)

    monkeypatch.setattr(split_stage, "prepare", prepare_while_others_write)
    recipe = load_recipe(None, ['data.dataset="p"', 'features.sets=["core"]'])
    run = stages.new_split_run(recipe, data, runs).run
    assert read_json(run.path / "manifest.json")["dataset"]["version"] == 0
    assert [r["available"] for r in catalog.dataset_versions(data, "p")] == [True, True]


@pytest.fixture
def split_run(tmp_path) -> str:
    write_store(tmp_path / "data", "p", generate(symbols=3, bars=200, seed=1), "first")
    recipe = load_recipe(None, ['data.dataset="p"', 'features.sets=["core"]', "model.params.n_estimators=5"])
    return str(stages.new_split_run(recipe, tmp_path / "data", tmp_path / "runs").path)


@pytest.mark.parametrize(("file", "text", "what"), [
    ("manifest.json", "garbage", "manifest.json is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("manifest.json", "[]", "manifest.json is not a JSON object"),
    ("split/pipeline.json", "garbage", "split/pipeline.json is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
])
def test_a_damaged_run_file_is_one_line_not_an_unexpected_failure(runner, split_run, file, text, what):
    (Path(split_run) / file).write_text(text)
    result = runner.invoke(app, ["train", "--run", split_run])
    assert result.exit_code == 2, result.output
    run_id = Path(split_run).name
    assert result.stderr.splitlines() == [
        f"error: run {run_id}: {what}; the run is damaged, start a new one with `qfactory train --recipe R`"]


def test_run_latest_skips_a_damaged_run(runner, tmp_path, split_run):
    damaged = tmp_path / "runs" / "zz-damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("garbage")
    result = runner.invoke(app, ["train", "--run", "latest", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == split_run


def test_a_damaged_delta_log_is_one_line(runner, tmp_path):
    write_store(tmp_path / "data", "q", generate(symbols=2, bars=30, seed=1), "first")
    log = tmp_path / "data" / "q" / "bars" / "_delta_log" / "00000000000000000000.json"
    log.write_text("garbage")
    result = runner.invoke(app, ["data", "show", "q"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: dataset 'q': its Delta table at {log.parent.parent} cannot be read (")
    assert line.endswith(f"restore its _delta_log from a backup, or delete {log.parent.parent.parent} and ingest it again")


def test_a_damaged_run_parquet_is_one_line(runner, split_run):
    (Path(split_run) / "split" / "rows.parquet").write_text("garbage")
    result = runner.invoke(app, ["train", "--run", split_run])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: run {Path(split_run).name}: split/rows.parquet is not a readable parquet file (")
    assert line.endswith("; the run is damaged, start a new one with `qfactory train --recipe R`")


def test_a_damaged_predictions_file_is_one_line(runner, split_run):
    assert runner.invoke(app, ["train", "--run", split_run, "-q"]).exit_code == 0
    (Path(split_run) / "predictions.parquet").write_text("garbage")
    result = runner.invoke(app, ["backtest", "--run", split_run])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0].startswith(f"error: run {Path(split_run).name}: predictions.parquet is not a readable parquet file (")


@pytest.mark.parametrize(("damage", "commands"), [
    ("spec.json", ["features"]),  # train --run reads only the table
    ("table/part-00000.parquet", ["features", "train"]),
])
def test_a_damaged_cached_feature_version_is_one_line(runner, tmp_path, split_run, damage, commands):
    (folder,) = (tmp_path / "data" / "p" / "features").iterdir()
    (folder / damage).write_text("garbage")
    calls = {"train": ["train", "--run", split_run], "features": ["features", "--recipe", str(Path(split_run) / "recipe.toml")]}
    for args in (calls[c] for c in commands):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        (line,) = [text for text in result.stderr.splitlines() if text.startswith("error")]  # after progress lines
        assert line.startswith(f"error: feature version {folder.name} is damaged ({damage}: ")
        assert line.endswith(f"delete {folder} and rerun the command (the version is rebuilt)")
