"""Raw-bar input channels for sequence models (`model.params.inputs = "bars"` or `"both"`).

Besides the feature table, a sequence model can read the bars themselves, made scale-free so one
network serves every symbol and price level:

- bar_open, bar_high, bar_low, bar_close: log(price / previous close) of each bar;
- bar_volume_z: log(1 + volume) as a z-score over the trailing `VOLUME_WINDOW` bars (t included).

With `[features] timeframes` (e.g. ["1w"] on daily bars) the same five channels are computed on
each coarser series (`bar_close_1w`, ...) and aligned causally exactly as the mtf feature engine
aligns its indicators (quant_cli.features.mtf): a coarse bar becomes visible at the first base bar
stamped at or after it CLOSED, never while it is forming. Every channel at t reads bars at or
before t only. Missing values (a symbol's first bar, a short volume history) become 0 and every
channel is clipped to ±CLIP, so a bad print cannot blow up a window.
"""

from __future__ import annotations

import polars as pl

from quant_cli.features.grouped import per_symbol
from quant_cli.features.mtf import resample

VOLUME_WINDOW = 20
CLIP = 10.0
_PRICES = ("open", "high", "low", "close")


def channel_names(timeframes: list[str] | tuple[str, ...] = ()) -> list[str]:
    base = [*(f"bar_{p}" for p in _PRICES), "bar_volume_z"]
    return [*base, *(f"{name}_{tf}" for tf in timeframes for name in base)]


def _exprs(suffix: str = "") -> list[pl.Expr]:
    prev = pl.col("close").shift(1)
    exprs = [(pl.col(p) / prev).log().alias(f"bar_{p}{suffix}") for p in _PRICES]
    volume = (pl.col("volume").cast(pl.Float64).clip(lower_bound=0) + 1).log()
    mean, std = volume.rolling_mean(VOLUME_WINDOW, min_samples=2), volume.rolling_std(VOLUME_WINDOW, min_samples=2)
    return [*exprs, ((volume - mean) / std).alias(f"bar_volume_z{suffix}")]


def bar_channels(bars: pl.DataFrame, timeframes: list[str] | tuple[str, ...] = ()) -> pl.DataFrame:
    """symbol, ts and `channel_names(timeframes)` (Float32) for every bar of `bars`."""
    if "volume" not in bars.columns:  # no volume recorded: its channel stays 0
        bars = bars.with_columns(pl.lit(0.0).alias("volume"))
    lazy = bars.lazy().select("symbol", "ts", *_PRICES, "volume").sort("symbol", "ts")
    out = per_symbol(lazy, _exprs())
    for tf in timeframes:
        coarse = per_symbol(resample(lazy, tf), _exprs(f"_{tf}")).rename({"ts": "_coarse_end"})
        out = out.join_asof(
            coarse, left_on="ts", right_on="_coarse_end", by="symbol", strategy="backward", check_sortedness=False
        ).drop("_coarse_end")
    names = channel_names(timeframes)
    clean = [
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(0.0).clip(-CLIP, CLIP).cast(pl.Float32).alias(c)
        for c in names
    ]
    return out.select("symbol", "ts", *clean).collect()
