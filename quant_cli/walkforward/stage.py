"""`qfactory walkforward --recipe R`: refit the whole pipeline per fold, stitch the out-of-sample
scores, backtest them as one series, and deflate the Sharpe ratio by the trials on the dataset.

Writes into a new run: `walkforward/folds.json` (per-fold windows, rows and metrics),
`walkforward/predictions.parquet` (symbol, ts, fold, score, label), `walkforward/backtest/`
(the stitched series' backtest) and the `walkforward` block of `metrics.json` (what the trial
ledger, quant_cli.runs.ledger, reads).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.backtest.metrics import market_exposure_note, prediction_metrics, summarize
from quant_cli.backtest.outputs import write_backtest
from quant_cli.backtest.report import write_report
from quant_cli.data import store
from quant_cli.dataset.table import KEYS, Table, build_table, new_pipeline, split_rows
from quant_cli.errors import RunError
from quant_cli.io import read_json, write_json_atomic, write_parquet_atomic
from quant_cli.models.registry import forecasts_path
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.runs.ledger import deflated_among_runs, trial_of_summary
from quant_cli.stages import common
from quant_cli.stages.results import WalkforwardResult, as_written
from quant_cli.walkforward.execute import PREDICTION_COLUMNS, FoldResult, FoldTask, run_folds
from quant_cli.walkforward.folds import WalkFold, build_folds


def walkforward_new(
    recipe: Recipe,
    data_dir: Path,
    runs_dir: Path,
    jobs: int | None = None,
    continue_on_error: bool = False,
    reporter: Reporter = SILENT,
    backend: str = "local",
) -> WalkforwardResult:
    """A new run holding a walk-forward: every fold refit on its own training window."""
    common.check_recipe(recipe, reporter)
    snapshot = common.pin_dataset(recipe, data_dir, reporter)  # split dates are not used: no split-date check
    common.check_universe(recipe, snapshot)  # before hours of fold fits end in an untradeable backtest
    with create_run(runs_dir, recipe) as run:
        homes = {"data home": Path(data_dir), "runs home": Path(runs_dir)}
        block = _walkforward_stage(run, recipe, snapshot, _Options(jobs, continue_on_error, backend, homes), reporter)
    return WalkforwardResult(run, as_written(block))


@dataclasses.dataclass(frozen=True)
class _Options:
    jobs: int | None
    continue_on_error: bool
    backend: str
    homes: dict[str, Path]  # what every worker must see (checked on ray)


def _walkforward_stage(
    run: Run, recipe: Recipe, snapshot: store.Snapshot, options: _Options, reporter: Reporter
) -> dict[str, Any]:
    with run.stage("walkforward") as info:
        run.update_manifest(dataset=common.dataset_record(snapshot))  # before the long read: vacuum keeps this version
        with reporter.working("walk-forward: features and labels"):
            table, bars, adjustment = build_table(recipe, snapshot, reporter, forecasts_path(recipe))
        run.update_manifest(
            fingerprints={"features": table.fingerprint, "dataset": snapshot.content_hash}, adjust=adjustment.to_json()
        )
        folds = build_folds(
            table.rows.filter(pl.col("label").is_not_null())["ts"].to_numpy(),
            recipe["walkforward"],
            common.embargo_of(recipe),
        )
        reporter.info(
            f"walk-forward: {len(folds)} {recipe['walkforward']['mode']} folds, "
            f"testing {folds[0].test_start:%Y-%m-%d} to {folds[-1].test_end:%Y-%m-%d}"
        )
        template = new_pipeline(recipe, table, snapshot.manifest, adjustment)
        device = common.device_of(recipe, reporter)
        run.update_manifest(device=device)
        tasks = _tasks(folds, table, template, bars.select(KEYS), recipe, device, _channels(recipe, bars, device))
        results = _collect(
            run_folds(tasks, options.jobs, options.backend, reporter, total=len(folds), homes=options.homes),
            folds,
            options.continue_on_error,
            reporter,
        )
        block = _write_outputs(
            run, recipe, folds, results, bars, recipe["data"]["frequency"] or snapshot.manifest["frequency"], reporter
        )
        info.update(n_folds=len(folds), failed=sum(r.status == "failed" for r in results))
    reporter.info(
        f"walk-forward: stitched sharpe {_fmt(block.get('sharpe'))}, IC {_fmt(block.get('ic'), '.4f')}; "
        f"deflated sharpe {_fmt(block.get('deflated_sharpe'), '.3f')} over {block['n_trials']} trial(s)"
        + (f"; {note}" if (note := market_exposure_note(block)) else "")
    )
    return block


def _fmt(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _channels(recipe: Recipe, bars: pl.DataFrame, device: str) -> pl.DataFrame | None:
    """Raw-bar channels and static columns of the adjusted bars for a model that reads them
    (model.params.inputs = bars/both, model.static_columns), computed once: every channel at t reads bars
    at or before t only, and a static column is one value per symbol, so one frame serves every fold."""
    model = common.make_model(recipe, device)
    if not model.reads_bars():
        return None
    from quant_cli.models.covariates import bar_inputs

    return bar_inputs(model, bars, recipe["features"]["timeframes"])


def _tasks(
    folds: list[WalkFold],
    table: Table,
    template: FittedPipeline,
    calendar: pl.DataFrame,
    recipe: Recipe,
    device: str,
    channels: pl.DataFrame | None = None,
) -> Iterator[FoldTask]:
    """One task per fold, built as workers free up: the fold's rows marked by the split stage's own
    rule (split_rows: purge, embargo, fill = "drop") under the fold's plan (every row of the window:
    a panel model's windows read the excluded ones as past inputs)."""
    embargo, purge = common.embargo_of(recipe), recipe["split"]["purge"]
    features_only = dataclasses.replace(table, rows=table.rows.clear())
    for fold in folds:
        window = fold.rows(calendar)
        plan = fold.plan(embargo, purge)
        rows, _ = split_rows(dataclasses.replace(table, rows=fold.rows(table.rows)), recipe, window, plan)
        yield FoldTask(
            fold,
            rows.drop("weight"),
            features_only,
            template,
            window,
            recipe,
            device,
            plan,
            None if channels is None else fold.rows(channels),
        )


def _collect(
    results: Iterator[FoldResult], folds: list[WalkFold], continue_on_error: bool, reporter: Reporter
) -> list[FoldResult]:
    out = []
    for result in results:
        if result.status == "failed":
            fold = folds[result.index]
            where = f"walk-forward fold {fold.index} (test {fold.test_start:%Y-%m-%d} to {fold.test_end:%Y-%m-%d})"
            if not continue_on_error:
                raise RunError(
                    f"{where} failed: {result.error}; fix the cause, or pass "
                    "--continue-on-error to leave failed folds out"
                )
            reporter.warn(f"{where} failed and is left out of the stitched series: {result.error}")
        out.append(result)
    if all(r.status == "failed" for r in out):
        raise RunError(f"every walk-forward fold failed, e.g. fold 0: {out[0].error}; fix the cause and rerun")
    return out


def _write_outputs(
    run: Run,
    recipe: Recipe,
    folds: list[WalkFold],
    results: list[FoldResult],
    bars: pl.DataFrame,
    frequency: str | None,
    reporter: Reporter,
) -> dict[str, Any]:
    predictions = (
        pl.concat([r.scored for r in results if r.scored is not None]).select(PREDICTION_COLUMNS).sort("symbol", "ts")
    )
    with stage_outputs(run, "walkforward") as folder:
        write_parquet_atomic(folder / "predictions.parquet", predictions)
        summary = _backtest_stitched(
            folder / "backtest", predictions, bars, recipe["backtest"], frequency, run, reporter
        )
        curve = pl.read_parquet(folder / "backtest" / "equity.parquet")
        folds_json = _folds_json(recipe["walkforward"]["mode"], folds, results, curve, summary["periods_per_year"])
        write_json_atomic(folder / "folds.json", folds_json)
        write_report(folder / "backtest", run.path)  # again, now with the fold table and boundaries
    quality = prediction_metrics(predictions)
    block = {
        **{k: v for k, v in summary.items() if k != "config"},
        "n_folds": len(folds),
        "n_failed": sum(r.status == "failed" for r in results),
        "ic": quality.get("ic"),
        "rank_ic": quality.get("rank_ic"),
        "icir": quality.get("icir"),
        "ic_kind": quality.get("ic_kind"),
    }
    return _with_deflated_sharpe(run, block)


def _backtest_stitched(
    folder: Path,
    scores: pl.DataFrame,
    bars: pl.DataFrame,
    cfg: dict[str, Any],
    frequency: str | None,
    run: Run,
    reporter: Reporter,
) -> dict[str, Any]:
    """The one call into the backtest: the stitched scores traded as one series by the same
    engine and outputs as the backtest stage (the summary carries skew and raw kurtosis, and the
    deflated Sharpe ratio the report shows)."""
    folder.mkdir()
    return write_backtest(
        folder,
        scores,
        bars,
        cfg,
        extra={"segment": "walkforward"},
        frequency=frequency,
        run_dir=run.path,
        reporter=reporter,
        deflate=lambda summary: _deflated(run, summary),
    )


def _deflated(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """The stitched Sharpe ratio deflated by every trial on the dataset (runs/ledger.py: the other
    runs plus this one, still in its staging folder); NaN and N = 0 without a finite Sharpe ratio."""
    if not math.isfinite(summary.get("sharpe", math.nan)):
        return {"deflated_sharpe": float("nan"), "n_trials": 0, "sharpe_variance": float("nan")}
    return deflated_among_runs(trial_of_summary(run.id, run.manifest(), "walkforward", summary), run.path.parent)


def _folds_json(
    mode: str, folds: list[WalkFold], results: list[FoldResult], curve: pl.DataFrame, ppy: float
) -> dict[str, Any]:
    """The per-fold table (the contract with the report writer)."""
    rows = []
    for fold, result in zip(folds, results):
        in_window = (
            curve.filter(pl.col("ts").is_between(fold.test_start, fold.test_end))
            if result.status == "ok"
            else curve.clear()
        )
        rows.append(
            {
                "fold": fold.index,
                "train_start": fold.window_start.isoformat(),
                "train_end": fold.train_end.isoformat(),
                "test_start": fold.test_start.isoformat(),
                "test_end": fold.test_end.isoformat(),
                "train_rows": result.train_rows,
                "test_rows": result.test_rows,
                "ic": result.metrics.get("ic"),
                "rank_ic": result.metrics.get("rank_ic"),
                "sharpe": summarize(in_window, ppy).get("sharpe") if in_window.height else None,
                "status": result.status,
                "error": result.error,
            }
        )
    return {"mode": mode, "n_folds": len(rows), "folds": rows}


def _with_deflated_sharpe(run: Run, block: dict[str, Any]) -> dict[str, Any]:
    """Write the block (with the deflated Sharpe ratio of the stitched backtest) into metrics.json."""
    path = run.path / "metrics.json"
    metrics = read_json(path) if path.is_file() else {}
    write_json_atomic(path, {**metrics, "walkforward": block})
    return block
