"""`qfactory tune` with a sequence model (issue 10 x tune): each trial fits an lstm on panel inputs
(windows over every row of the split, stages.fit_model) and the best trial is refit once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.tune.study import tune_new
from tests.test_tune import RECIPE, bars, poisoned_from_test_start, recipe_file, study_table  # noqa: F401 - recipe_file is a fixture

LSTM = (
    RECIPE.split("[model]")[0]
    + """
[model]
name = "lstm"
[model.params]
seq_len = 4
hidden = 8
[train]
epochs = 2
batch_size = 64
patience = 0
early_stopping = 0
threads = 1
[tune]
startup_trials = 2
[tune.space]
"model.params.hidden" = { int = [4, 16] }
"train.learning_rate" = { float = [0.001, 0.01], log = true }
"""
)


def test_a_two_trial_lstm_study_runs_end_to_end(runner, recipe_file):
    recipe_file.write_text(LSTM, encoding="utf-8")
    result = runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--trials", "2"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    trials = study_table(run)
    assert trials.height == 2 and np.isfinite(trials["value"].to_numpy()).all()
    refit = read_json(run / "manifest.json")["tune"]["refit"]["run_id"]
    metrics = read_json(run.parent / refit / "metrics.json")
    assert metrics["train"]["model"] == "lstm" and metrics["test"]["rows"] > 0


def test_a_model_that_reads_raw_bars_is_tuned_without_reading_the_test_segment(recipe_file, tmp_path):
    """Was refused ("tuning trials do not load raw bars"). Trials see the channels of the bars
    before the test segment: poisoning every test-segment price changes no trial."""
    recipe_file.write_text(LSTM.replace("[model.params]\n", '[model.params]\ninputs = "both"\n'), encoding="utf-8")
    write_store(tmp_path / "poisoned", "p", poisoned_from_test_start(bars()), "test")
    recipe = load_recipe(recipe_file, ["tune.refit=false"])
    clean = tune_new(recipe, recipe_file.parent / "data", tmp_path / "runs", trials=2)
    dirty = tune_new(recipe, tmp_path / "poisoned", tmp_path / "runs", trials=2)
    table = study_table(clean.run.path)
    assert table["state"].to_list() == ["complete", "complete"] and np.isfinite(table["value"].to_numpy()).all()
    assert study_table(dirty.run.path).equals(table)
