"""`qfactory tune` with a sequence model (issue 10 x tune): each trial fits an lstm on panel inputs
(windows over every row of the split, stages.fit_model) and the best trial is refit once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quant_cli.cli import app
from quant_cli.io import read_json
from tests.test_tune import RECIPE, recipe_file, study_table  # noqa: F401 - recipe_file is a fixture

LSTM = RECIPE.split("[model]")[0] + """
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
