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

import polars as pl

from feature_oracle import core
from feature_oracle._registry import REGISTRY, register

REGISTRY.define_set(
    "mtf", "Multi-timeframe: indicators on coarser bars (features.timeframes), visible once the coarse bar closed."
)

_TAGS = ("mtf",)


@register(
    "mtf_ret_{tf}",
    inputs=("close",),
    tags=(*_TAGS, "momentum"),
    sets=("mtf",),
    description="Return of the last closed coarse bar: close / previous coarse close - 1.",
)
def mtf_ret() -> pl.Expr:
    return core.ret(1)


@register(
    "mtf_trend_{tf}",
    params={"n": 10},
    inputs=("close",),
    tags=(*_TAGS, "trend"),
    sets=("mtf",),
    description="Coarse close relative to its n-coarse-bar simple moving average: close / SMA(n) - 1.",
)
def mtf_trend(n: int) -> pl.Expr:
    return core.close_ma(n)


@register(
    "mtf_vol_{tf}",
    params={"n": 10},
    inputs=("close",),
    tags=(*_TAGS, "volatility"),
    sets=("mtf",),
    description="Standard deviation (ddof=1) of coarse-bar log returns over the last n coarse bars.",
)
def mtf_vol(n: int) -> pl.Expr:
    return core.vol(n)


@register(
    "mtf_rsi_{tf}",
    params={"n": 14},
    inputs=("close",),
    tags=(*_TAGS, "momentum", "oscillator"),
    sets=("mtf",),
    description="RSI(n) (Wilder, 0-100) of coarse closes.",
)
def mtf_rsi(n: int) -> pl.Expr:
    return core.rsi(n)


@register(
    "mtf_range_{tf}",
    inputs=("high", "low", "close"),
    tags=(*_TAGS, "volatility", "candle"),
    sets=("mtf",),
    description="Range of the last closed coarse bar relative to its close: (high - low) / close.",
)
def mtf_range() -> pl.Expr:
    return core.hl_range()
