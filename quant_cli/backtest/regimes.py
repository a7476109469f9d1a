"""Backtest results by market regime (`summary["by_regime"]`, shown in report.html).

Decision: the regime of a period is computed here, from the bars, the same way for every run —
not read from the run's features. A breakdown that depends on which features a model happened to
use could not be compared across runs, and most runs have no regime feature at all. The label is
causal: it is known at the close of the decision bar t, the period whose return (t+1 -> t+2) it
conditions.

The market is the equal-weight mean of the universe's close-to-close returns at each timestamp.
Its trailing `WINDOW`-bar volatility is ranked among its own last `HISTORY` values (at least
`MIN_HISTORY` of them) — the `regime_vol_pct_{w}` feature's percentile, on the market series —
and cut into terciles: "low" (< 1/3), "normal", "high" (> 2/3); periods before that warm-up are
"unknown". Per regime: periods, share of time, mean and total (compounded) return, Sharpe (mean
over std of that regime's per-period net returns, annualised) and hit rate (share of periods > 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest.panel import close_returns

WINDOW = 20
HISTORY = 252
MIN_HISTORY = 60
REGIMES = ("low", "normal", "high", "unknown")


def market_regimes(bars: pl.DataFrame, window: int = WINDOW, history: int = HISTORY) -> pl.DataFrame:
    """ts, percentile, regime: the equal-weight market's volatility percentile and regime known at the close of ts."""
    market = close_returns(bars).group_by("ts").agg(pl.col("ret").mean()).sort("ts")
    vol = pl.col("ret").rolling_std(window, min_samples=window)
    rank = vol.rolling_rank(history, method="average", min_samples=MIN_HISTORY)
    seen = vol.is_not_null().cast(pl.Int64).rolling_sum(history, min_samples=1)  # values the rank was taken among
    percentile = (rank - 1.0) / (seen - 1.0)
    label = (
        pl.when(percentile < 1.0 / 3.0)
        .then(pl.lit("low"))
        .when(percentile > 2.0 / 3.0)
        .then(pl.lit("high"))
        .when(percentile.is_not_null())
        .then(pl.lit("normal"))
        .otherwise(pl.lit("unknown"))
    )
    return market.select("ts", percentile.alias("percentile"), label.alias("regime"))


def by_regime(curve: pl.DataFrame, regimes: pl.DataFrame, periods_per_year: float) -> dict[str, dict[str, Any]]:
    """{regime: metrics} of the curve's net returns, each period labelled by its decision ts."""
    labelled = curve.select("ts", "net").join(regimes, on="ts", how="left")
    labelled = labelled.with_columns(pl.col("regime").fill_null("unknown"))
    total = labelled.height
    out: dict[str, dict[str, Any]] = {}
    for regime in REGIMES:
        r = labelled.filter(pl.col("regime") == regime)["net"].to_numpy().astype(float)
        if r.size:
            out[regime] = _metrics(r, total, periods_per_year)
    return out


def _metrics(r: np.ndarray, total: int, ppy: float) -> dict[str, Any]:
    std = float(r.std(ddof=1)) if r.size > 1 else 0.0
    return {
        "periods": int(r.size),
        "share": r.size / total,
        "mean_return": float(r.mean()),
        "total_return": float(np.prod(1.0 + r) - 1.0),
        "sharpe": float(r.mean()) / std * math.sqrt(ppy) if std > 0 else float("nan"),
        "hit_rate": float((r > 0).mean()),
    }
