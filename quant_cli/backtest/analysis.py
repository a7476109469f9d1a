"""Signal diagnostics for the report, computed when the backtest runs (the report can then be
regenerated from the run directory alone, without the data store):

  ic_series  IC and rank IC per timestamp (metrics.ic_by_timestamp: timestamps with >= 5 scored symbols)
  ic_decay   rank IC of the score against the forward return over h = 1, 2, 5, 10, 20 bars from the
             execution price (dataset.labels.forward_return, the label definition), h bars apart
             (cross-sectional, or pooled when there is no cross-section: `kind` says which)
  deciles    mean one-period return (the engine's period_returns) of each score decile: at each
             timestamp with >= 10 scored symbols the scores are cut into 10 rank buckets and the
             bucket means are averaged over timestamps; with fewer symbols the rows are pooled
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest.metrics import ic_by_timestamp, prediction_metrics, scored_rows
from quant_cli.backtest.panel import period_returns
from quant_cli.dataset.labels import forward_return

HORIZONS = (1, 2, 5, 10, 20)
BUCKETS = 10


def signal_analysis(scores: pl.DataFrame, bars: pl.DataFrame, execution: str) -> dict[str, Any]:
    keys = scores.select(pl.col("symbol").cast(pl.String), "ts", pl.col("score").cast(pl.Float64))
    bars = bars.with_columns(pl.col("symbol").cast(pl.String))
    out: dict[str, Any] = {"ic_series": [], "ic_decay": [], "deciles": []}
    if "label" in scores.columns:
        series = ic_by_timestamp(scores.with_columns(pl.col("symbol").cast(pl.String)))
        out["ic_series"] = [
            {"ts": t.isoformat(), "ic": ic, "rank_ic": r}
            for t, ic, r in series.select("ts", "ic", "rank_ic").iter_rows()
        ]
    for h in HORIZONS:
        labelled = keys.join(forward_return(bars, h, execution).select("symbol", "ts", "label"), on=["symbol", "ts"])
        if labelled.height:
            m = prediction_metrics(labelled)
            out["ic_decay"].append({"horizon": h, "rank_ic": m["rank_ic"], "ic": m["ic"], "kind": m["ic_kind"]})
    out["deciles"] = _deciles(keys.join(period_returns(bars, execution), on=["symbol", "ts"]))
    return out


def _deciles(frame: pl.DataFrame) -> list[dict[str, Any]]:
    scored = scored_rows(frame.rename({"ret": "label"}))
    if scored.height < BUCKETS:
        return []
    n = pl.len().over("ts")
    per_ts = scored.filter(n >= BUCKETS).with_columns(
        ((pl.col("score").rank("ordinal").over("ts") - 1) * BUCKETS // pl.len().over("ts")).alias("bucket")
    )
    if per_ts.height:
        means = (
            per_ts.group_by("ts", "bucket").agg(pl.col("label").mean()).group_by("bucket").agg(pl.col("label").mean())
        )
    else:
        pooled = scored.with_columns(((pl.col("score").rank("ordinal") - 1) * BUCKETS // pl.len()).alias("bucket"))
        means = pooled.group_by("bucket").agg(pl.col("label").mean())
    means = means.sort("bucket")
    return [
        {"decile": int(b) + 1, "mean_return": float(v) if v is not None and np.isfinite(v) else None}
        for b, v in means.select("bucket", "label").iter_rows()
    ]
