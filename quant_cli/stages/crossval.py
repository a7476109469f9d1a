"""Cross-validation of a model over the development rows (train + val) with purged folds.

Each fold's model is fit with a fixed number of rounds (no early stopping: stopping on the fold's
test rows would leak them into the out-of-fold scores), with the preprocessing (an unfitted copy
of the run's FittedPipeline) and the sample weights both fit on the fold's own training rows —
statistics fit on all development rows would include the fold's test block. CPCV scores are
also assembled into
backtest paths, each covering every development timestamp exactly once.

Folds pass no validation rows: a model that needs held-out rows of its own (blending's
meta-model) carves them from the end of the fold's training rows, purged by label end time, so
the fold's test rows stay unseen by every part of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest.metrics import prediction_metrics
from quant_cli.dataset.table import KEYS, Prepared, Table, fit_weights, with_regime_of
from quant_cli.errors import ModelError
from quant_cli.models.base import Model
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.report import SILENT, Reporter
from quant_cli.splits.chronological import SplitPlan, cv_folds, development, folds_summary
from quant_cli.splits.purged import group_of
from quant_cli.stages import fitting


@dataclass
class FoldWindow:
    """What a panel model's windows read in one fold (DESIGN.md §6): every row of the fold's window
    (training window + gap + test window, excluded rows included: past inputs, never labels), the
    feature table they come from, the fold's plan, and the raw-bar channels (symbol, ts, bar_...;
    None unless the model reads bars). The panel is built from these rows through the fold's own
    pipeline, so windows are contiguous in time even where purge and embargo removed labels."""

    table: Table
    rows: pl.DataFrame
    plan: SplitPlan
    channels: pl.DataFrame | None = None

    def prepared(self, pipeline: FittedPipeline, calendar: pl.DataFrame) -> Prepared:
        """The fold seen as a run's split, so fitting.build_panel / model_inputs serve it as they serve a run."""
        return Prepared(self.table, self.rows, self.plan, pipeline, calendar)


def cross_validate(
    prepared: Prepared,
    split_cfg: dict[str, Any],
    embargo: int | str,
    new_model: Callable[[], Model],
    reporter: Reporter = SILENT,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Out-of-fold predictions (symbol, ts, fold, group, score, label) and CV metrics."""
    kept = prepared.kept.drop("excluded")
    dev = development(kept)
    folds = cv_folds(kept, split_cfg, embargo)
    n_groups = split_cfg["folds"] if split_cfg["method"] == "purged_kfold" else split_cfg["groups"]
    dev = prepared.table.with_features(dev.with_columns(pl.Series("group", group_of(dev["ts"].to_numpy(), n_groups))))
    parts = []
    for fold in reporter.track(folds["folds"], "cross-validation"):
        train, test = dev[fold.train], dev[fold.test]
        _, score = fit_and_score(
            prepared.pipeline, new_model(), train, test, _calendar(prepared), split_cfg, table=prepared.table
        )
        parts.append(
            test.select("symbol", "ts", "group", "label").with_columns(
                pl.lit(fold.index).alias("fold"), pl.Series("score", score)
            )
        )
    oof = pl.concat(parts).select("symbol", "ts", "fold", "group", "score", "label")
    return oof, _cv_metrics(oof, folds, dev)


def fit_and_score(
    template: FittedPipeline,
    model: Model,
    train: pl.DataFrame,
    test: pl.DataFrame,
    calendar: pl.DataFrame,
    split_cfg: dict[str, Any],
    val: pl.DataFrame | None = None,
    early_stopping: int = 0,
    window: FoldWindow | None = None,
    table: Table | None = None,
) -> tuple[FittedPipeline, np.ndarray]:
    """The per-fold step of cross-validation and walk-forward: a fresh copy of `template` and the
    sample weights are fit on `train` alone, then the fresh `model`; returns the fitted pipeline
    and `test`'s scores (`model` is fitted in place; NaN where a panel model has no full window).

    Frames hold symbol, ts, label, t1 and the raw feature columns; `val` (optional) drives early
    stopping only. Panel models (`Model.uses_panel()`) also need the fold's `window`. This is the
    one place folds call `Model.fit` / `Model.predict`. A pipeline with the regime HMM fits it on
    `train` here and needs the feature `table`: its filtered values come from each symbol's whole
    history there (Table.regime_history), not from the fold's rows alone.
    """
    pipeline = template.unfitted().fit(train)
    weights = fit_weights(train, calendar, split_cfg) if model.sample_weights else None
    has_val = val is not None and val.height > 0
    if model.uses_panel():
        return pipeline, _fit_and_score_panel(
            model,
            window,
            pipeline,
            calendar,
            {"train": train, "val": val, "test": test},
            weights,
            early_stopping if has_val else 0,
        )
    if pipeline.fits_regime:
        if table is None:
            raise ModelError(
                "the regime feature regime_hmm_p_high is filtered over whole histories; pass the feature table"
            )
        history = table.regime_history(pipeline)
        train, test = with_regime_of(history, train), with_regime_of(history, test)
        val = with_regime_of(history, val) if has_val else val
    model.fit(
        _matrix(pipeline, train),
        train["label"].to_numpy(),
        feature_names=pipeline.features,
        X_val=_matrix(pipeline, val) if has_val else None,
        y_val=val["label"].to_numpy() if has_val else None,
        sample_weight=None if weights is None else weights["weight"].to_numpy(),
        early_stopping=early_stopping if has_val else 0,
        symbols=train["symbol"].to_numpy(),
        symbols_val=val["symbol"].to_numpy() if has_val else None,
        ts=train["ts"].to_numpy(),
        t1=train["t1"].to_numpy(),
    )
    return pipeline, model.predict(_matrix(pipeline, test), symbols=test["symbol"].to_numpy())


def fold_inputs(
    model: Model, window: FoldWindow, pipeline: FittedPipeline, calendar: pl.DataFrame, parts: dict[str, pl.DataFrame]
) -> tuple[Prepared, fitting.Inputs]:
    """A panel model's inputs of `parts` in one fold: PanelRows into ONE panel of the window's rows
    through the fold's fitted `pipeline` (fitting.model_inputs, as the train stage builds them)."""
    prepared = window.prepared(pipeline, calendar)
    return prepared, fitting.model_inputs(model, prepared, parts, window.channels)


def _fit_and_score_panel(
    model: Model,
    window: FoldWindow | None,
    pipeline: FittedPipeline,
    calendar: pl.DataFrame,
    parts: dict[str, pl.DataFrame | None],
    weights: pl.DataFrame | None,
    early_stopping: int,
) -> np.ndarray:
    if window is None:  # a matrix of a fold's kept rows would make windows across purged gaps
        raise ModelError(
            f"model '{model.name}' reads windows of past rows and cannot be fit on a fold's rows alone; "
            'use walk-forward (qfactory walkforward) or split.method = "chronological"'
        )
    train = parts["train"].select(*KEYS, "label", "t1")
    weight = weights["weight"] if weights is not None else pl.Series("weight", [None] * train.height, pl.Float64)
    parts = {
        "train": train.with_columns(weight.alias("weight")),  # fit_weights keeps train's row order
        "val": parts["val"] if parts["val"] is not None else train.clear(),
        "test": parts["test"],
    }
    prepared, inputs = fold_inputs(model, window, pipeline, calendar, parts)
    fitting.fit_model(model, prepared, inputs, early_stopping)
    test, X = inputs["test"]
    return model.predict(X, symbols=test["symbol"].to_numpy())


def _matrix(pipeline: FittedPipeline, rows: pl.DataFrame) -> np.ndarray:
    return pipeline.model_matrix(rows)


def _calendar(prepared: Prepared) -> pl.DataFrame:
    if prepared.calendar is None:  # unweighted splits do not store it; weights are None then
        return prepared.rows.select("symbol", "ts")
    return prepared.calendar


def _cv_metrics(oof: pl.DataFrame, folds: dict[str, Any], dev: pl.DataFrame) -> dict[str, Any]:
    per_fold = [prediction_metrics(oof.filter(pl.col("fold") == f.index)) for f in folds["folds"]]
    out = {
        "folds": folds_summary(folds, dev),
        "fold_ic": [m["ic"] for m in per_fold],
        "fold_rank_ic": [m["rank_ic"] for m in per_fold],
    }
    if folds["paths"]:
        path_metrics = [prediction_metrics(_path(oof, path)) for path in folds["paths"]]
        out["path_ic"] = [m["ic"] for m in path_metrics]
        out["path_rank_ic"] = [m["rank_ic"] for m in path_metrics]
    ics = np.array(out.get("path_ic", out["fold_ic"]), dtype=float)
    out.update(ic_mean=float(np.nanmean(ics)), ic_std=float(np.nanstd(ics)), ic_min=float(np.nanmin(ics)))
    return out


def _path(oof: pl.DataFrame, split_per_group: list[int]) -> pl.DataFrame:
    """Group g's scores from split `split_per_group[g]`: one prediction per development row."""
    chosen = pl.DataFrame(
        {"group": list(range(len(split_per_group))), "fold": split_per_group},
        schema={"group": oof["group"].dtype, "fold": oof["fold"].dtype},
    )
    return oof.join(chosen, on=["group", "fold"], how="inner")
