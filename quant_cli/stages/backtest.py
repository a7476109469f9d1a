"""The backtest stage (a run's scores, or another tool's target weights) and the report it renders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.backtest import strategies
from quant_cli.backtest.engine import with_defaults
from quant_cli.backtest.metrics import market_exposure_note
from quant_cli.backtest.outputs import read_weights, write_backtest
from quant_cli.backtest.report import render_run_reports
from quant_cli.data import store
from quant_cli.dataset.table import load_bars
from quant_cli.errors import RunError
from quant_cli.io import read_run_json, read_run_parquet, write_json_atomic
from quant_cli.pipeline import adjust
from quant_cli.pipeline.adjust import Adjustment
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.runs.ledger import deflated_among_runs, trial_of_summary
from quant_cli.stages.common import check_recipe, dataset_record, pin_dataset, pinned_for
from quant_cli.stages.results import BacktestResult, ReportResult, as_written


def backtest_stage(run: Run, recipe: Recipe, snapshot: store.Snapshot, reporter: Reporter) -> dict[str, Any]:
    """Backtest the run's scores of backtest.segment; returns metrics.json's backtest block as written."""
    if not (run.path / "predictions.parquet").is_file():
        raise RunError(f"run {run.id} has no predictions.parquet; train it first with `qfactory train --run {run.id}`")
    cfg = recipe["backtest"]
    scores = read_run_parquet(run.path, "predictions.parquet").filter(pl.col("segment") == cfg["segment"])
    if scores.height == 0:
        raise RunError(
            f"run {run.id} has no {cfg['segment']} predictions to backtest; "
            "set backtest.segment to a segment the split has rows in"
        )
    strategies.check_universe(with_defaults(cfg), *strategies.universe_of(scores))  # before the stage is marked running
    with run.stage("backtest") as info:
        bars = _adjustment(run).apply(load_bars(recipe, snapshot))  # the prices the labels were measured on
        summary = _write_backtest(run, "score", scores, bars, recipe, snapshot, reporter)
        info["periods"] = summary["periods"]
    _report_backtest(summary, reporter)
    return as_written(summary)


def _write_backtest(
    run: Run,
    kind: str,
    signal: pl.DataFrame,
    bars: pl.DataFrame,
    recipe: Recipe,
    snapshot: store.Snapshot,
    reporter: Reporter,
) -> dict[str, Any]:
    """backtest/ (write_backtest) and the backtest block of the run's metrics.json, which it returns."""
    cfg = recipe["backtest"]
    segment = cfg["segment"] if kind == "score" else "weights"  # the ledger counts only test-segment model runs
    with reporter.working("backtest: next-bar execution with costs"), stage_outputs(run, "backtest") as folder:
        deflate = (lambda summary: _deflated(run, summary)) if segment == "test" else None
        frequency = recipe["data"]["frequency"] or snapshot.manifest.get("frequency")
        summary = write_backtest(
            folder,
            signal,
            bars,
            cfg,
            extra={"segment": segment},
            kind=kind,
            run_dir=run.path,
            frequency=frequency,
            reporter=reporter,
            deflate=deflate,
        )
    path = run.path / "metrics.json"
    metrics = read_run_json(run.path, "metrics.json") if path.is_file() else {}
    metrics["backtest"] = block = {k: v for k, v in summary.items() if k != "config"}
    write_json_atomic(path, metrics)
    return block


def _deflated(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """deflated_sharpe and n_trials of this backtest against the test-segment trials on its
    dataset so far (runs/ledger.py), this one included; nothing without a finite Sharpe ratio.
    write_backtest merges them in before metrics.json and report.html are written."""
    if not math.isfinite(summary.get("sharpe", math.nan)):
        return {}
    trial = trial_of_summary(run.id, run.manifest(), "backtest", summary)
    result = deflated_among_runs(trial, run.path.parent)
    return {"deflated_sharpe": result["deflated_sharpe"], "n_trials": result["n_trials"]}


def _report_backtest(summary: dict[str, Any], reporter: Reporter) -> None:
    before = summary.get("before_costs", {})
    reporter.info(
        f"backtest: sharpe {summary.get('sharpe', float('nan')):.2f} "
        f"({before.get('sharpe', float('nan')):.2f} before costs), "
        f"annual return {summary.get('annual_return', float('nan')):.2%}, max "
        f"drawdown {summary.get('max_drawdown', float('nan')):.2%}, "
        f"{summary.get('periods_per_year', float('nan')):.0f} periods/year ({summary.get('periods_per_year_source')})"
        + (
            f"; deflated Sharpe {summary['deflated_sharpe']:.2f} over {summary['n_trials']} trial(s)"
            if "n_trials" in summary
            else ""
        )
        + (f"; {note}" if (note := market_exposure_note(summary)) else "")
    )


def backtest_weights(
    recipe: Recipe, weights_file: Path, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT
) -> BacktestResult:
    """`qfactory backtest --weights FILE --recipe R`: a new run that backtests given target weights
    (symbol, ts, weight; another tool's signal) on the recipe's dataset with its [backtest] settings."""
    check_recipe(recipe, reporter, model=False)
    weights = read_weights(weights_file)
    snapshot = pin_dataset(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        run.update_manifest(dataset=dataset_record(snapshot))
        with run.stage("backtest") as info:
            raw = load_bars(recipe, snapshot)
            adjustment = adjust.resolve(recipe["data"]["adjust"], raw, reporter)
            run.update_manifest(adjust=adjustment.to_json())
            summary = _write_backtest(run, "weight", weights, adjustment.apply(raw), recipe, snapshot, reporter)
            info["periods"] = summary["periods"]
    _report_backtest(summary, reporter)
    return BacktestResult(run, as_written(summary))


def _adjustment(run: Run) -> Adjustment:
    path = run.path / "split" / "pipeline.json"
    if not path.is_file():
        return Adjustment()
    return FittedPipeline.from_json(read_run_json(run.path, "split/pipeline.json")).adjustment


def backtest_existing(run: Run, data_dir: Path, reporter: Reporter = SILENT) -> BacktestResult:
    """`qfactory backtest --run RUN`: on the dataset version the run was split on."""
    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    run.begin_stage("backtest", reporter)
    recipe = run.recipe()
    return BacktestResult(run, backtest_stage(run, recipe, pinned_for(run, recipe, data_dir), reporter))


def report_existing(run: Run) -> ReportResult:
    """`qfactory report --run RUN`: regenerate report.html of backtest/ and walkforward/backtest/."""
    written = render_run_reports(run.path)
    if not written:
        raise RunError(
            f"run {run.id} has no backtest to report; backtest it first with `qfactory backtest --run {run.id}`"
        )
    return ReportResult(run, written)
