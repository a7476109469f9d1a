"""Walk-forward with a sequence model (issue 10 x 11, DESIGN.md §6): each fold fits its own
pipeline on its training rows, then ONE panel of every row of the fold's window (excluded rows as
past inputs, never labels) through that pipeline; the model gets PanelRows of its train/val/test
rows. Folds ignore every bar after their training end; jobs do not change results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from helpers import prices_rewritten_after

from quant_cli.cli import app
from quant_cli.data.store import pin, write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.table import build_table, new_pipeline
from quant_cli.recipe import load_recipe
from quant_cli.stages.crossval import fold_inputs
from quant_cli.walkforward.execute import fit_fold, fold_segments
from quant_cli.walkforward.folds import build_folds
from quant_cli.walkforward.stage import _channels, _tasks
from tests.test_walkforward import FAST, _ingest

LSTM = [
    *(s for s in FAST if not s.startswith("model.params.")),
    'model.name="lstm"',
    "model.params.seq_len=4",
    "model.params.hidden=8",
    "train.epochs=2",
    "train.batch_size=64",
    "train.patience=0",
]


def _walkforward(runner, tmp_path: Path, *sets: str, args: tuple[str, ...] = ()):
    recipe = tmp_path / "wf.toml"
    recipe.write_text('[run]\nname = "wf"\n')
    return runner.invoke(
        app, ["walkforward", "--recipe", str(recipe), *(a for s in [*LSTM, *sets] for a in ("--set", s)), *args]
    )


def test_lstm_walkforward_end_to_end_and_jobs_do_not_change_results(runner, tmp_path):
    """A tiny lstm reading features and raw bars: every fold scores its whole test window (its
    windows reach back into the gap and the training window), and jobs=1 equals jobs=2."""
    _ingest(runner)
    first = _walkforward(runner, tmp_path, 'model.params.inputs="both"', args=("--jobs", "1", "--json", "-q"))
    second = _walkforward(runner, tmp_path, 'model.params.inputs="both"', args=("--jobs", "2", "--json", "-q"))
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    runs = [Path(json.loads(r.stdout)["path"]) for r in (first, second)]
    pa, pb = (pl.read_parquet(r / "walkforward" / "predictions.parquet") for r in runs)
    assert pa.height > 0 and pa["score"].is_finite().all()
    assert pa.equals(pb), "results depend on --jobs"
    folds = json.loads((runs[0] / "walkforward" / "folds.json").read_text())["folds"]
    assert [f["status"] for f in folds] == ["ok"] * 5
    assert [f["test_rows"] for f in folds] == pa.group_by("fold").len().sort("fold")["len"].to_list()
    assert all(f["test_rows"] == 40 * 5 or f is folds[-1] for f in folds), "a test row lost its window"


LEAK_RECIPE = [*LSTM, 'preprocess.scaler="zscore"', "walkforward.validation=20", "train.early_stopping=2"]


def _fold_fit(data_dir: Path, index: int):
    """Fold `index`'s fitted pipeline and model, and the model's scores of its training rows
    (through the fold's own panel)."""
    recipe = load_recipe(None, LEAK_RECIPE)
    snapshot = pin(data_dir, "p")
    table, bars, adjustment = build_table(recipe, snapshot)
    folds = build_folds(table.rows.filter(pl.col("label").is_not_null())["ts"].to_numpy(), recipe["walkforward"], 3)
    tasks = _tasks(
        folds,
        table,
        new_pipeline(recipe, table, snapshot.manifest, adjustment),
        bars.select("symbol", "ts"),
        recipe,
        "cpu",
        _channels(recipe, bars, "cpu"),
    )
    task = list(tasks)[index]
    pipeline, model, _ = fit_fold(task)
    train = fold_segments(task)["train"]
    _, inputs = fold_inputs(model, task.window(), pipeline, task.calendar, {"train": train})
    return folds[index], pipeline, model.predict(inputs["train"][1], symbols=train["symbol"].to_numpy()), train


def test_a_sequence_folds_pipeline_and_model_ignore_every_bar_after_its_training_end(tmp_path):
    """Rewrite every bar after fold 1's training end: its scaler state and its lstm's scores of its
    training rows are unchanged (fails if the fold's pipeline or model sees its test window, e.g.
    a pipeline fit on every row of the panel)."""
    bars = generate(symbols=5, bars=300, seed=3)
    write_store(tmp_path / "a", "p", bars, "test")
    fold, pipeline, scores, train = _fold_fit(tmp_path / "a", 1)
    rewritten = prices_rewritten_after(bars, fold.train_end)
    write_store(tmp_path / "b", "p", rewritten, "test")
    fold_b, pipeline_b, scores_b, train_b = _fold_fit(tmp_path / "b", 1)
    assert fold_b == fold and train_b.equals(train)
    assert pipeline_b.state == pipeline.state, "the fold's scaler saw bars after its training end"
    assert np.isfinite(scores).sum() > 0.9 * len(scores)
    np.testing.assert_array_equal(scores_b, scores)
