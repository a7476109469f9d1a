"""Running walk-forward folds: one fold = one fresh FittedPipeline and model fit on the fold's
training rows only, scoring its test window; folds run in parallel in one place (`run_folds`).

Results do not depend on the number of jobs: every fold is a pure function of its task (the
model is seeded by run.seed, LightGBM is built deterministic and column-wise, so its thread
count does not change a split), and results come back in fold order whatever finishes first.
Workers report nothing (SILENT): a fold that fails returns its one-line error instead of
raising, so the caller decides between failing the command and `--continue-on-error`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backend import check_backend, open_backend
from quant_cli.backtest.metrics import prediction_metrics
from quant_cli.dataset.table import KEYS, Table
from quant_cli.errors import DataError, QFactoryError
from quant_cli.models.base import Model
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.report import SILENT, Reporter
from quant_cli.splits.chronological import EXCLUDED, SplitPlan
from quant_cli.stages.common import make_model
from quant_cli.stages.crossval import FoldWindow, fit_and_score
from quant_cli.walkforward.folds import WalkFold

PREDICTION_COLUMNS = ("symbol", "ts", "fold", "score", "label")


@dataclass
class FoldTask:
    """Everything one fold needs, picklable for a worker process."""

    fold: WalkFold
    rows: pl.DataFrame  # the fold's rows marked by the split rule: symbol, ts, label, t1, segment, excluded
    table: Table  # the feature version (its rows dropped: the worker reads features of `rows`)
    template: FittedPipeline  # unfitted
    calendar: pl.DataFrame  # symbol, ts of the fold's bars (sample weights)
    recipe: dict[str, Any]
    device: str
    plan: SplitPlan | None = None  # the fold's split plan (panel models' Prepared view)
    channels: pl.DataFrame | None = None  # raw-bar channels of the fold's bars, when the model reads bars

    def window(self) -> FoldWindow:
        """Every row of the fold's window, for a panel model's windows (past inputs, never labels)."""
        return FoldWindow(self.table, self.rows, self.plan, self.channels)


@dataclass
class FoldResult:
    index: int
    status: str  # ok | failed
    error: str | None = None
    scored: pl.DataFrame | None = None  # symbol, ts, fold, score, label
    train_rows: int = 0
    test_rows: int = 0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def fold_segments(task: FoldTask) -> dict[str, pl.DataFrame]:
    """The fold's kept train / val / test rows with their raw features (one read of the feature table)."""
    kept = task.rows.filter(pl.col(EXCLUDED).is_null())
    parts = {
        "train": kept.filter(pl.col("segment") == "train"),
        "val": kept.filter(pl.col("segment") == "val"),
        "test": kept.filter((pl.col("segment") == "test") & (pl.col("ts") >= task.fold.test_start)),
    }
    keys = pl.concat([p.select(*KEYS, "label", "t1") for p in parts.values()])
    # The fold's scaler state is bit-for-bit repeatable whatever this frame's chunk layout:
    # pipeline/preprocess.py fits its statistics with numpy, not a parallel polars sum.
    with_features = task.table.with_features(keys)
    bounds = np.cumsum([0, *(p.height for p in parts.values())])
    return {name: with_features.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i, name in enumerate(parts)}


def fit_fold(task: FoldTask) -> tuple[FittedPipeline, Model, pl.DataFrame]:
    """Fit the fold's pipeline and model on its training rows; its test window's scores."""
    parts = fold_segments(task)
    if parts["train"].height == 0:
        raise DataError(
            f"no training rows are left after purge and embargo (window {task.fold.window_start:%Y-%m-%d} to "
            f"{task.fold.boundary:%Y-%m-%d}); use a longer walkforward.train"
        )
    model = make_model(task.recipe, task.device)
    pipeline, score = fit_and_score(
        task.template,
        model,
        parts["train"],
        parts["test"],
        task.calendar,
        task.recipe["split"],
        val=parts["val"],
        early_stopping=task.recipe["train"]["early_stopping"],
        window=task.window() if model.uses_panel() else None,
        table=task.table,
    )
    scored = parts["test"].select(
        "symbol",
        "ts",
        pl.lit(task.fold.index, pl.Int32).alias("fold"),
        pl.Series("score", score, pl.Float64),
        pl.col("label").cast(pl.Float64),
    )
    return pipeline, model, scored.filter(pl.col("score").is_not_nan())  # a window's warm-up: not scored, so absent


def run_fold(task: FoldTask) -> FoldResult:
    """`fit_fold`, with the fold's metrics, or its failure as one line."""
    try:
        _, model, scored = fit_fold(task)
    except Exception as exc:  # noqa: BLE001 - a fold's failure is reported by the caller, naming the fold
        return FoldResult(task.fold.index, "failed", error=_one_line(exc))
    train_rows = int(task.rows.filter(pl.col(EXCLUDED).is_null() & (pl.col("segment") == "train")).height)
    metrics = prediction_metrics(scored)
    return FoldResult(
        task.fold.index,
        "ok",
        scored=scored,
        train_rows=train_rows,
        test_rows=scored.height,
        metrics={"ic": metrics.get("ic"), "rank_ic": metrics.get("rank_ic")},
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, QFactoryError) else f"{type(exc).__name__}: {exc}"
    return (text.splitlines() or [type(exc).__name__])[0]


def run_folds(
    tasks: Iterable[FoldTask],
    jobs: int | None,
    backend: str = "local",
    reporter: Reporter = SILENT,
    total: int | None = None,
    homes: dict[str, Path] | None = None,
) -> Iterator[FoldResult]:
    """Results of `run_fold` over `tasks`, in task order, `jobs` at a time (default: every core),
    with one progress bar over folds. Locally, tasks are built lazily as workers free up; on Ray
    (`quant_cli.backend`) they are shipped at once, after checking that every node sees `homes`."""
    check_backend(backend)
    if backend == "ray":
        yield from _run_on_backend(tasks, jobs, backend, reporter, total, homes or {})
        return
    from joblib import Parallel, cpu_count, delayed

    from quant_cli.workers import pool_kwargs

    parallel = Parallel(n_jobs=jobs or cpu_count(), return_as="generator", backend="loky", **pool_kwargs())
    yield from reporter.track(parallel(delayed(run_fold)(task) for task in tasks), "walk-forward folds", total=total)


def _run_on_backend(
    tasks: Iterable[FoldTask],
    jobs: int | None,
    backend: str,
    reporter: Reporter,
    total: int | None,
    homes: dict[str, Path],
) -> Iterator[FoldResult]:
    from joblib import cpu_count

    with open_backend(backend, jobs or cpu_count()) as opened:
        opened.check_shared(homes)
        yield from reporter.track(opened.map(run_fold, list(tasks)), "walk-forward folds", total=total)
