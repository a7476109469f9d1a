"""Fitting and scoring a registered model on a run's rows — the one place every stage (train,
cross-validation, walk-forward) goes through, for tabular and sequence models alike.

Tabular models get the matrix of the requested rows. Panel models (sequence models, and
ensembles with a sequence member; `Model.uses_panel()`) get `PanelRows`: indices into ONE panel
holding the preprocessed features of EVERY row of the split, each symbol's rows contiguous and
in time order — excluded rows (purged, embargoed, unlabelled) included, since they are past
inputs of later windows, though never labels. Rows a model cannot score (a window's warm-up)
come back with a NaN score and `predict_frame` leaves them out: downstream code joins
predictions by (symbol, ts), never by position.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import polars as pl

from quant_cli.dataset.table import KEYS, Prepared
from quant_cli.models.base import Model, StepReport
from quant_cli.models.panel import Panel, PanelRows, make_panel
from quant_cli.report import SILENT, Reporter

Inputs = dict[str, tuple[pl.DataFrame, Any]]


def build_panel(prepared: Prepared, channels: pl.DataFrame | None = None) -> tuple[Panel, pl.DataFrame]:
    """(the panel of every row, symbol/ts → panel row): one pass over the feature table, plus the
    raw-bar `channels` (symbol, ts, bar_...: quant_cli.features.bars.bar_channels) when given."""
    rows = prepared.rows.select(KEYS).sort(KEYS)
    frequency = prepared.pipeline.options.get("bar_spacing")  # the dataset's, for known-future calendar fields
    return make_panel(rows, prepared.inputs(rows), channels, frequency), rows.with_row_index("_panel_row")


def model_inputs(
    model: Model, prepared: Prepared, parts: dict[str, pl.DataFrame], channels: pl.DataFrame | None = None
) -> Inputs:
    """name → (rows, model inputs) for each part (frames with symbol, ts, label, t1, ...);
    `channels`: the raw-bar channels and static columns, for models that read them (`Model.reads_bars()`)."""
    if not model.uses_panel():
        X = prepared.inputs(pl.concat([p.select(KEYS) for p in parts.values()]))
        bounds = np.cumsum([0, *(p.height for p in parts.values())])  # one pass; each part a view
        return {name: (part, X[bounds[i] : bounds[i + 1]]) for i, (name, part) in enumerate(parts.items())}
    panel, index = build_panel(prepared, channels if model.reads_bars() else None)
    out = {}
    for name, part in parts.items():
        rows = part.select(KEYS).join(index, on=KEYS, how="left", maintain_order="left")["_panel_row"]
        out[name] = (part, PanelRows(panel, rows.to_numpy()))
    return out


def segment_inputs(
    model: Model, prepared: Prepared, names: tuple[str, ...], channels: pl.DataFrame | None = None
) -> Inputs:
    return model_inputs(model, prepared, {name: prepared.segment(name) for name in names}, channels)


def targets(model: Model, part: pl.DataFrame) -> np.ndarray:
    """What `model` learns for `part`'s rows: the label (n,), or for a path model the label's one-bar
    returns (n, horizon) (quant_cli.dataset.labels.forward_path), each ending by the row's t1."""
    if model.output != "path":
        return part["label"].to_numpy()
    return np.stack(part["path"].to_numpy())


def fit_model(
    model: Model,
    prepared: Prepared,
    inputs: Inputs,
    early_stopping: int,
    reporter: Reporter = SILENT,
    report: StepReport | None = None,
) -> float:
    """Fit on inputs["train"] (validating on inputs["val"] when present); returns seconds.
    `report`: the loop's per-round/epoch hook (tuning prunes through it)."""
    train, X = inputs["train"]
    val, X_val = inputs.get("val", (None, None))
    weight = train["weight"].to_numpy() if model.sample_weights and train["weight"].null_count() == 0 else None
    has_val = val is not None and val.height > 0
    started = time.perf_counter()
    with reporter.working(f"train: fitting {model.name} on {train.height:,} rows"):
        model.fit(
            X,
            targets(model, train),
            feature_names=prepared.features,
            X_val=X_val if has_val else None,
            y_val=targets(model, val) if has_val else None,
            sample_weight=weight,
            early_stopping=early_stopping,
            symbols=train["symbol"].to_numpy(),
            symbols_val=val["symbol"].to_numpy() if has_val else None,
            ts=train["ts"].to_numpy(),
            t1=train["t1"].to_numpy(),
            report=report,
        )
    return time.perf_counter() - started


def predict_frame(model: Model, part: pl.DataFrame, X: Any) -> pl.DataFrame:
    """symbol, ts, [segment,] score, [label,] (+ p_<class> for classifiers) of the rows the model scores."""
    symbols = part["symbol"].to_numpy()
    frame = part.select(c for c in (*KEYS, "segment") if c in part.columns)
    frame = frame.with_columns(
        pl.Series("score", model.predict(X, symbols=symbols)), *([part["label"]] if "label" in part.columns else [])
    )
    if model.is_classifier:
        proba = model.predict_proba(X, symbols=symbols)
        frame = frame.with_columns(pl.Series(f"p_{c:g}", proba[:, i]) for i, c in enumerate(model.classes_))
    return frame.filter(pl.col("score").is_not_nan())  # a window's warm-up: not scored, so absent


def predict_segments(model: Model, inputs: Inputs, names: tuple[str, ...] = ("val", "test")) -> pl.DataFrame:
    """symbol, ts, segment, score, label — plus p_<class> columns for classifiers — of every scored row."""
    frames = [predict_frame(model, *inputs[name]) for name in names if inputs[name][0].height]
    empty = {
        "symbol": pl.String,
        "ts": pl.Datetime("us", "UTC"),
        "segment": pl.String,
        "score": pl.Float64,
        "label": pl.Float64,
    }
    return pl.concat(frames) if frames else pl.DataFrame(schema=empty)
