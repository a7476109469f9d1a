"""The audit's alternative future: every bar after a cutoff rewritten, still valid canonical bars.

Each symbol's close after the cutoff follows a new random walk from its last close at or before the
cutoff, with Gaussian log returns of the symbol's own volatility; open, high and low keep their
ratio to the close of their bar (so high >= max(open, close) >= min(open, close) >= low still holds),
volume is scaled by a random factor, `adj_close` keeps its ratio to the close (the adjustment factors
are corporate actions, not prices: the audit changes the market, not the share count), and any other
numeric column (alternative data) is scaled by a random factor. Bars at or before the cutoff are
returned bit for bit; text columns are untouched. Deterministic for a given seed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

PRICE_RATIOS = ("open", "high", "low")  # kept as a ratio to the bar's close
FALLBACK_VOLATILITY = 0.02  # per bar, for a symbol with fewer than two closes before the cutoff


def rewrite_after(bars: pl.DataFrame, cutoff: dt.datetime, seed: int) -> pl.DataFrame:
    """`bars` (canonical, sorted by symbol and ts) with every bar whose ts > `cutoff` rewritten."""
    rng = np.random.default_rng(seed)
    later = pl.col("ts") > cutoff
    shocks = pl.Series("_shock", rng.standard_normal(bars.height))
    noise = pl.Series("_noise", np.exp(rng.normal(0.0, 0.5, bars.height)))
    log_return = pl.col("close").log().diff().over("symbol")
    volatility = (
        log_return.filter(~later).std().over("symbol").fill_null(FALLBACK_VOLATILITY).fill_nan(FALLBACK_VOLATILITY)
    )
    anchor = (
        pl.when(~later)
        .then(pl.col("close"))
        .forward_fill()
        .over("symbol")
        .fill_null(pl.col("close").first().over("symbol"))
    )
    walk = pl.when(later).then(pl.col("_shock") * pl.col("_volatility")).otherwise(0.0).cum_sum().over("symbol")
    frame = bars.with_columns(shocks, noise).with_columns(volatility.alias("_volatility"))
    frame = frame.with_columns(pl.when(later).then(anchor * walk.exp()).otherwise(pl.col("close")).alias("_close"))
    ratio_columns = [c for c in (*PRICE_RATIOS, "adj_close") if c in bars.columns]
    scaled = [c for c, dtype in bars.schema.items() if dtype.is_numeric() and c not in ("close", *ratio_columns)]
    frame = frame.with_columns(
        *(
            pl.when(later).then(pl.col(c) / pl.col("close") * pl.col("_close")).otherwise(pl.col(c)).alias(c)
            for c in ratio_columns
        ),
        *(pl.when(later).then(pl.col(c) * pl.col("_noise")).otherwise(pl.col(c)).alias(c) for c in scaled),
    )
    return frame.with_columns(pl.col("_close").alias("close")).select(bars.columns)
