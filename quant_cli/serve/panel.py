"""Scoring panel models (sequence models, and ensembles with one: `Model.uses_panel()`) from a request.

Training fed such a model windows of `seq_len` consecutive rows of one symbol out of ONE panel of
preprocessed features (quant_cli.models.panel.make_panel), with the raw-bar channels beside
them when the model reads bars. A request becomes the same thing: every row of each symbol, in
time order, through the bundle's pipeline, the channels computed from the request's own bars, and
the rows to score named by `PanelRows` — so a scored row's window is the `seq_len` rows ending at
it. The bundle's required bars (pipeline/lookback.py::request_bars) make every row of the last
window exact: the features' warm-up, the channels' lookback, plus seq_len - 1.

A cross-sectional model (flag `cross_section`, e.g. xsection) scores the request's symbols at each
timestamp together: the request's symbols are the cross-section, and a request of one symbol is refused.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quant_cli.errors import DataError, shown
from quant_cli.models.base import Model
from quant_cli.models.covariates import bar_inputs
from quant_cli.models.panel import PanelRows, make_panel
from quant_cli.pipeline.fitted import FittedPipeline

KEYS = ["symbol", "ts"]


def score_panel(
    pipeline: FittedPipeline,
    model: Model,
    data: pl.DataFrame,
    *,
    timeframes: list[str] | None = None,
    first: int = 0,
    last_only: bool = False,
) -> pl.DataFrame:
    """symbol, ts, score (+ p_<class>) of `model` on the rows of `data` (raw bars, or raw feature rows;
    sorted by symbol, ts) through `pipeline` at position >= `first` of their symbol
    (`last_only`: each symbol's last row) that have a full window; rows without one are absent, as in
    training's predictions. `timeframes`: those of the raw-bar channels the model reads (None: none)."""
    inputs = pipeline.feature_rows(data, None).sort(KEYS)
    inputs = inputs.with_columns(pl.col("symbol").cast(pl.String))
    panel = make_panel(inputs, pipeline.model_matrix(inputs), _channels(pipeline, model, data, timeframes))
    keep = panel.position >= first
    if last_only and len(panel):
        keep &= np.r_[panel.symbols[1:] != panel.symbols[:-1], True]
    rows = PanelRows(panel, np.flatnonzero(keep))
    _check_cross_section(model, rows)
    score = model.predict(rows, symbols=rows.symbols)
    picked = pl.Series(rows.rows)  # the panel holds `inputs`' rows in their order
    out = pl.DataFrame(
        [inputs["symbol"].gather(picked), inputs["ts"].gather(picked), pl.Series("score", score, dtype=pl.Float64)]
    )
    if model.is_classifier:
        proba = model.predict_proba(rows, symbols=rows.symbols)
        out = out.with_columns(pl.Series(f"p_{c:g}", proba[:, i]) for i, c in enumerate(model.classes_))
    return out.filter(pl.col("score").is_not_nan())  # no full window: not scored


def _check_cross_section(model: Model, rows: PanelRows) -> None:
    """A cross-sectional model ranks the symbols scored at the same t against each other; one symbol
    alone would get a score from a cross-section of one, which training never showed it: refused."""
    present = np.unique(rows.symbols)
    if model.cross_section and len(present) == 1:
        raise DataError(
            f"model '{model.name}' scores each symbol against the other symbols at the same timestamp "
            f"(flag cross_section), but the request holds only symbol {shown(str(present[0]))}; "
            "send the bars of every symbol to score together (at least 2)"
        )


def _channels(
    pipeline: FittedPipeline, model: Model, data: pl.DataFrame, timeframes: list[str] | None
) -> pl.DataFrame | None:
    """The raw-bar channels of the request's adjusted bars, for a model that reads them, and the static
    columns the request carries (a model falls back to each symbol's training value for those it lacks)."""
    if timeframes is None and not model.static_columns:
        return None
    if timeframes is not None and "close" not in data.columns:
        raise DataError(
            f"model '{model.name}' reads raw bars (model.params.inputs) beside the features; "
            "send bars, not precomputed feature rows"
        )
    bars = pipeline.adjustment.apply(data) if timeframes is not None else data
    channels = bar_inputs(model, bars, timeframes or [], strict=False)
    return None if channels is None else channels.with_columns(pl.col("symbol").cast(pl.String))
