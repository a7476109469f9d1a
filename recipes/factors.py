"""Example factor plugin for recipes/plugins.toml (docs/factors.md).

Every top-level function not starting with `_` is a feature named after it. It receives ONE symbol's
bars (a polars DataFrame sorted by ts: symbol, ts and the columns named in `inputs`) and returns one
value per bar, using only bars at or before each row (qfactory checks this before building it).
"""

import polars as pl

from quant_cli import factor


@factor(window=20)
def ma20_gap(bars: pl.DataFrame) -> pl.Series:
    """How far the close sits below its 20-bar mean (a mean-reversion signal)."""
    return bars["close"].rolling_mean(20) / bars["close"] - 1


@factor(window=21, inputs=("close", "volume"))
def volume_surprise(bars: pl.DataFrame) -> pl.Series:
    """Today's volume against its previous 20 bars, signed by today's return."""
    volume = bars["volume"]
    typical = volume.shift(1).rolling_mean(20)
    return (volume / typical - 1) * bars["close"].pct_change().sign()


def _unused_helper(x):  # a leading underscore: not a feature
    return x
