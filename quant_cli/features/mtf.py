"""Multi-timeframe features (set "mtf"): indicators on coarser bars, brought back causally.

For each timeframe in `features.timeframes` (e.g. ["1w"] on daily data, ["1h", "1d"] on 5-minute
data) each symbol's bars are resampled to coarse bars (open first, high max, low min, close last,
volume sum) over UTC-aligned windows [start, start + timeframe) — weeks start on Monday. A
family's expression runs on that symbol's coarse bars (the same per-symbol rules as any stage-1
family), and the value of a coarse bar is joined back to the base bars with
`join_asof(strategy="backward")` on the coarse bar's END time (start + timeframe): it becomes
visible at the first base bar stamped at or after the coarse bar closed, never earlier. A
still-forming coarse bar is therefore never seen, whatever the base bar's timestamp convention
(bar open or bar close); on daily data the week's value appears on the next Monday's bar.

Names: ``mtf_<indicator>_<timeframe>``, e.g. ``mtf_rsi_1w``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from quant_cli.features import core
from quant_cli.features.grouped import per_symbol
from quant_cli.features.panel import Panel, kernel_columns
from quant_cli.features.registry import REGISTRY, Feature, register

REGISTRY.define_set(
    "mtf", "Multi-timeframe: indicators on coarser bars (features.timeframes), visible once the coarse bar closed."
)

_AGGREGATES = {
    "open": pl.col("open").first(),
    "high": pl.col("high").max(),
    "low": pl.col("low").min(),
    "close": pl.col("close").last(),
    "volume": pl.col("volume").sum(),
}
_TAGS = ("mtf",)


def by_timeframe(features: Iterable[Feature]) -> dict[str, list[Feature]]:
    groups: dict[str, list[Feature]] = {}
    for feature in features:
        groups.setdefault(feature.timeframe, []).append(feature)
    return groups


def resample(lazy: pl.LazyFrame, timeframe: str) -> pl.LazyFrame:
    """Coarse OHLCV bars per symbol; `ts` is the coarse bar's END (when its values become known)."""
    present = [c for c in _AGGREGATES if c in lazy.collect_schema().names()]
    coarse = lazy.group_by_dynamic(
        "ts",
        every=timeframe,
        group_by="symbol",
        closed="left",
        label="left",
        start_by="window",
    ).agg(_AGGREGATES[c] for c in present)
    return coarse.with_columns(pl.col("ts").dt.offset_by(timeframe)).sort("symbol", "ts", maintain_order=True)


def join_coarse(out: pl.LazyFrame, lazy: pl.LazyFrame, timeframe: str, features: list[Feature]) -> pl.LazyFrame:
    """`out` (sorted by symbol, ts) plus the features of the last coarse bar closed at or before each ts."""
    coarse = resample(lazy, timeframe).collect(engine="in-memory")
    pieces = [coarse.select("symbol", "ts"), kernel_columns(coarse, [f for f in features if f.family.kernel])]
    exprs = [f.expr().cast(pl.Float64).alias(f.name) for f in features if not f.family.kernel]
    if exprs:
        pieces.append(per_symbol(coarse.lazy(), exprs).drop("symbol", "ts").collect(engine="in-memory"))
    values = pl.concat(pieces, how="horizontal").lazy().rename({"ts": "_coarse_end"})
    return out.join_asof(
        values,
        left_on="ts",
        right_on="_coarse_end",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
    ).drop("_coarse_end")


@register(
    "mtf_ret_{tf}",
    inputs=("close",),
    tags=(*_TAGS, "momentum"),
    sets=("mtf",),
    kernel=True,
    description="Return of the last closed coarse bar: close / previous coarse close - 1.",
)
def mtf_ret(p: Panel) -> np.ndarray:
    return core.ret(p, 1)


@register(
    "mtf_trend_{tf}",
    params={"n": 10},
    inputs=("close",),
    tags=(*_TAGS, "trend"),
    sets=("mtf",),
    kernel=True,
    description="Coarse close relative to its n-coarse-bar simple moving average: close / SMA(n) - 1.",
)
def mtf_trend(p: Panel, n: int) -> np.ndarray:
    return core.close_ma(p, n)


@register(
    "mtf_vol_{tf}",
    params={"n": 10},
    inputs=("close",),
    tags=(*_TAGS, "volatility"),
    sets=("mtf",),
    kernel=True,
    description="Standard deviation (ddof=1) of coarse-bar log returns over the last n coarse bars.",
)
def mtf_vol(p: Panel, n: int) -> np.ndarray:
    return core.vol(p, n)


@register(
    "mtf_rsi_{tf}",
    params={"n": 14},
    inputs=("close",),
    tags=(*_TAGS, "momentum", "oscillator"),
    sets=("mtf",),
    kernel=True,
    description="RSI(n) (Wilder, 0-100) of coarse closes.",
)
def mtf_rsi(p: Panel, n: int) -> np.ndarray:
    return core.rsi(p, n)


@register(
    "mtf_range_{tf}",
    inputs=("high", "low", "close"),
    tags=(*_TAGS, "volatility", "candle"),
    sets=("mtf",),
    kernel=True,
    description="Range of the last closed coarse bar relative to its close: (high - low) / close.",
)
def mtf_range(p: Panel) -> np.ndarray:
    return core.hl_range(p)
