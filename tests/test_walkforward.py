"""`qfactory walkforward` (issue 11 §6-8): every fold refits the whole pipeline on its own training
window; stitched out-of-sample scores, their backtest and the deflated Sharpe ratio; jobs do not
change results; a failed fold fails the command (or is left out with --continue-on-error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from helpers import SYN_RECIPE as RECIPE
from helpers import prices_rewritten_after

from quant_cli.cli import app
from quant_cli.data.store import pin, write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.table import build_table, new_pipeline
from quant_cli.errors import ModelError
from quant_cli.recipe import load_recipe
from quant_cli.walkforward import execute
from quant_cli.walkforward.execute import fit_fold, fold_segments
from quant_cli.walkforward.folds import build_folds
from quant_cli.walkforward.stage import _tasks

FAST = [
    'data.dataset="p"',
    "label.horizon=3",
    "model.params.n_estimators=20",
    "model.params.min_data_in_leaf=20",
    "train.threads=1",
    "walkforward.train=120",
    "walkforward.test=40",
]
FOLD_KEYS = {
    "fold",
    "train_start",
    "train_end",
    "test_start",
    "test_end",
    "train_rows",
    "test_rows",
    "ic",
    "rank_ic",
    "sharpe",
    "status",
    "error",
}


def _ingest(runner, *extra: str) -> None:
    result = runner.invoke(
        app, ["ingest", "--source", "synthetic", "--dataset", "p", "--symbols", "5", "--bars", "300", "-q", *extra]
    )
    assert result.exit_code == 0, result.output


def _walkforward(runner, tmp_path: Path, *args: str):
    recipe = tmp_path / "wf.toml"
    recipe.write_text('[run]\nname = "wf"\n')
    sets = [a for s in FAST for a in ("--set", s)]
    return runner.invoke(app, ["walkforward", "--recipe", str(recipe), *sets, *args])


def test_end_to_end_and_jobs_do_not_change_results(runner, tmp_path):
    """jobs=1 and jobs=2 give identical predictions and folds; the second run is the same experiment
    (recipe, data, code), so the ledger counts it once: N stays 1."""
    _ingest(runner)
    first = _walkforward(runner, tmp_path, "--jobs", "1", "--json", "-q")
    second = _walkforward(runner, tmp_path, "--jobs", "2", "--json", "-q")
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    runs = [Path(a["path"]), Path(b["path"])]
    pa, pb = (pl.read_parquet(r / "walkforward" / "predictions.parquet") for r in runs)
    assert pa.columns == ["symbol", "ts", "fold", "score", "label"] and pa.height > 0
    assert pa.equals(pb), "results depend on --jobs"
    fa, fb = (json.loads((r / "walkforward" / "folds.json").read_text()) for r in runs)
    assert fa == fb and set(fa) == {"mode", "n_folds", "folds"} and fa["n_folds"] == len(fa["folds"]) == 5
    assert all(set(f) == FOLD_KEYS and f["status"] == "ok" and f["train_end"] < f["test_start"] for f in fa["folds"])
    assert [f["fold"] for f in fa["folds"]] == sorted(pa["fold"].unique().to_list())
    assert (runs[0] / "walkforward" / "backtest" / "equity.parquet").is_file()
    block = a["walkforward"]
    for key in (
        "sharpe",
        "periods",
        "periods_per_year",
        "skew",
        "kurtosis",
        "n_folds",
        "deflated_sharpe",
        "n_trials",
        "sharpe_variance",
    ):
        assert key in block, key
    assert (block["n_trials"], b["walkforward"]["n_trials"]) == (1, 1)  # an identical rerun is not another trial
    trials = ("deflated_sharpe", "n_trials", "sharpe_variance")
    assert {k: v for k, v in block.items() if k not in trials} == {
        k: v for k, v in b["walkforward"].items() if k not in trials
    }
    assert json.loads((runs[1] / "metrics.json").read_text())["walkforward"] == b["walkforward"]


def test_a_strategy_that_cannot_trade_one_symbol_is_refused_before_any_fold(runner, tmp_path):
    result = runner.invoke(
        app, ["ingest", "--source", "synthetic", "--dataset", "p", "--symbols", "1", "--bars", "300", "-q"]
    )
    assert result.exit_code == 0, result.output
    refused = _walkforward(runner, tmp_path)
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [
        "error: backtest.strategy = 'long_short' needs at least 2 symbols scored at one timestamp, "
        "but the universe has 1 (S000), so it would never hold a position; "
        "use a strategy that trades one symbol: 'sign', 'long_only', 'threshold' "
        "(e.g. --set backtest.strategy=sign), or add symbols to the dataset"
    ]
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]  # no run directory
    top_k = _walkforward(runner, tmp_path, "--set", "backtest.strategy=top_k", "--set", "backtest.top_k_short=true")
    assert top_k.exit_code == 2 and "'top_k' with top_k_short needs at least 2 symbols" in top_k.stderr


def _break_fold(index: int, monkeypatch) -> None:
    real = execute.fit_fold

    def failing(task):
        if task.fold.index == index:
            raise ModelError("model 'lightgbm' could not be fit: boom")
        return real(task)

    monkeypatch.setattr(execute, "fit_fold", failing)


def test_a_failed_fold_fails_the_command_naming_the_fold(runner, tmp_path, monkeypatch):
    _ingest(runner)
    _break_fold(1, monkeypatch)
    result = _walkforward(runner, tmp_path, "--jobs", "1", "-q")  # in-process: the patch applies
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: walk-forward fold 1 (test 2015-08-19 to 2015-10-13) failed: model 'lightgbm' could not be fit: boom; "
        "fix the cause, or pass --continue-on-error to leave failed folds out"
    ]
    assert not any((tmp_path / "runs").iterdir()), "a failed walk-forward left a run behind"


def test_continue_on_error_leaves_the_failed_fold_out(runner, tmp_path, monkeypatch):
    _ingest(runner)
    _break_fold(1, monkeypatch)
    result = _walkforward(runner, tmp_path, "--jobs", "1", "--continue-on-error")
    assert result.exit_code == 0, result.output
    assert "warning: walk-forward fold 1 (test 2015-08-19 to 2015-10-13) failed and is left out" in result.stderr
    run = Path(result.stdout.strip())
    folds = json.loads((run / "walkforward" / "folds.json").read_text())["folds"]
    assert [f["status"] for f in folds] == ["ok", "failed", "ok", "ok", "ok"]
    assert folds[1]["error"] == "model 'lightgbm' could not be fit: boom" and folds[1]["ic"] is None
    assert 1 not in pl.read_parquet(run / "walkforward" / "predictions.parquet")["fold"].to_list()
    assert json.loads((run / "metrics.json").read_text())["walkforward"]["n_failed"] == 1


def test_random_walk_has_no_out_of_sample_ic(runner, tmp_path):
    """No planted signal: the stitched per-timestamp ICs have a t-statistic inside ±3 (labels of one
    bar do not overlap, so the ICs are close to independent)."""
    result = runner.invoke(
        app,
        [
            "ingest",
            "--source",
            "synthetic",
            "--dataset",
            "p",
            "--symbols",
            "12",
            "--bars",
            "500",
            "--signal",
            "0",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    result = _walkforward(
        runner,
        tmp_path,
        "--set",
        "label.horizon=1",
        "--set",
        "walkforward.train=150",
        "--set",
        "walkforward.test=50",
        "--jobs",
        "1",
        "-q",
    )
    assert result.exit_code == 0, result.output
    predictions = pl.read_parquet(Path(result.stdout.strip()) / "walkforward" / "predictions.parquet")
    ics = (
        predictions.group_by("ts").agg(pl.corr("score", "label").alias("ic"))["ic"].drop_nans().drop_nulls().to_numpy()
    )
    assert len(ics) > 250
    t_stat = ics.mean() / ics.std(ddof=1) * np.sqrt(len(ics))
    assert abs(t_stat) < 3.0, f"out-of-sample IC on a random walk has t = {t_stat:.2f}"


# ---- leakage: each fold sees only its own training window ----------------------------------------

LEAK_RECIPE = [
    *FAST,
    'preprocess.scaler="zscore"',
    'split.sample_weight="uniqueness"',
    "split.time_decay=0.5",
    "walkforward.validation=20",
    "train.early_stopping=5",
]


def _fold_fit(data_dir: Path, index: int):
    """Fold `index`'s fitted pipeline and model, and its training rows' model inputs."""
    recipe = load_recipe(None, LEAK_RECIPE)
    snapshot = pin(data_dir, "p")
    table, bars, adjustment = build_table(recipe, snapshot)
    folds = build_folds(table.rows.filter(pl.col("label").is_not_null())["ts"].to_numpy(), recipe["walkforward"], 3)
    task = list(
        _tasks(
            folds,
            table,
            new_pipeline(recipe, table, snapshot.manifest, adjustment),
            bars.select("symbol", "ts"),
            recipe,
            "cpu",
        )
    )[index]
    pipeline, model, _ = fit_fold(task)
    train = fold_segments(task)["train"]
    return folds[index], pipeline, model, train


def test_a_folds_pipeline_and_model_ignore_every_bar_after_its_training_end(tmp_path):
    """Rewrite every bar after fold 1's training end: its scaler state and its model's predictions
    on its training rows are unchanged (fails if the fold fits on more than its window, or its
    training labels are not purged at the boundary)."""
    bars = generate(symbols=5, bars=300, seed=3)
    write_store(tmp_path / "a", "p", bars, "test")
    fold, pipeline, model, train = _fold_fit(tmp_path / "a", 1)
    rewritten = prices_rewritten_after(bars, fold.train_end)
    assert not rewritten.equals(bars)
    write_store(tmp_path / "b", "p", rewritten, "test")
    fold_b, pipeline_b, model_b, train_b = _fold_fit(tmp_path / "b", 1)
    assert fold_b == fold and train_b.equals(train)
    assert pipeline_b.state == pipeline.state, "the fold's scaler saw bars after its training end"
    X = pipeline.model_matrix(train)
    np.testing.assert_array_equal(
        model_b.predict(X, symbols=train["symbol"].to_numpy()), model.predict(X, symbols=train["symbol"].to_numpy())
    )


def test_help_has_an_example(runner):
    result = runner.invoke(app, ["walkforward", "--help"])
    assert result.exit_code == 0 and "Example: qfactory walkforward --recipe recipes/walkforward.toml" in result.stdout


def test_a_killed_walkforward_leaves_nothing_that_blocks(tmp_path):
    """A walkforward/ folder without its committed stage is a killed attempt's leftover: removed."""
    from quant_cli.report import CollectingReporter
    from quant_cli.runs.directory import Run

    run_dir = tmp_path / "runs" / "wf-x"
    (run_dir / "walkforward" / "backtest").mkdir(parents=True)
    (run_dir / "manifest.json").write_text('{"run_id": "wf-x", "stages": {}}')
    reporter = CollectingReporter()
    Run(run_dir).begin_stage("walkforward", reporter)
    assert not (run_dir / "walkforward").exists()
    assert reporter.texts("notice") == [
        "run wf-x: the walkforward stage never committed (interrupted); removed "
        "its leftovers (walkforward) and redoing it"
    ]


def test_a_failed_parallel_walkforward_is_one_line_without_joblib_warnings(runner, home, tmp_path):
    """Was the error line followed by joblib's 'UserWarning: 4 tasks ... have been cancelled' (two more
    lines): the abandoned worker pool was collected after the command's warning filter ended."""
    import warnings

    root, _ = home
    recipe = tmp_path / "wf.toml"
    recipe.write_text(
        RECIPE.replace('name = "linear"', 'name = "gru"\n[model.params]\nseq_len = 32\nhidden = 4')
        + 'epochs = 1\n[preprocess]\nfill = "zero"\n[walkforward]\ntrain = 20\ntest = 40\n'
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(
            app,
            [
                "walkforward",
                "--recipe",
                str(recipe),
                "--jobs",
                "2",
                "--quiet",
                "--data-dir",
                str(root / "data"),
                "--runs-dir",
                str(tmp_path / "runs"),
            ],
        )
        import gc

        gc.collect()
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: walk-forward fold 0 (")
    assert [str(w.message) for w in caught if "cancelled" in str(w.message)] == []
