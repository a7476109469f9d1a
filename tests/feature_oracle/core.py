"""The "core" set: ~20 causal, scale-free features (returns, volatility, RSI, MACD, Bollinger, ATR...).

Every builder returns an expression over ONE symbol's bars in time order; the engine applies
``.over("symbol")``. Only backward-looking operations are used (shift(n >= 0), rolling, ewm,
cum_*), so a value at bar t depends on bars <= t only — tests/test_causality.py proves it for
every registered feature. Rolling windows require a full window (min_samples = window): warm-up
rows are null rather than computed from a partial window.

Prices are divided out (returns, ratios to close) so values are comparable across symbols.
"""

from __future__ import annotations

import polars as pl

from feature_oracle._registry import REGISTRY, register

REGISTRY.define_set(
    "core", "About 20 causal, scale-free price/volume features: returns, volatility, RSI, MACD, Bollinger, ATR, volume."
)
# Defined here so the core families that are TA classics can join it; the rest is in ta.py.
REGISTRY.define_set(
    "ta",
    "Classic technical indicators (TA-Lib definitions), scale-free: RSI, MACD, Bollinger, ATR, ADX, stochastic, CCI, OBV, MFI, ...",
)
_TA = ("core", "ta")

_close = pl.col("close")


def seeded_ewm(x: pl.Expr, n: int, alpha: float, start: int = 0) -> pl.Expr:
    """Recursive smoothing seeded with the simple mean of the first `n` values (TA-Lib style).

    `start` is the number of leading nulls of `x` (1 after a diff). With s = start + n - 1:
    y[s] = mean(x[start..s]); y[t] = (1 - alpha) * y[t-1] + alpha * x[t]; rows before s are null.
    ewm_mean(adjust=False) runs the recursion on [seed, x after it]. The seed row is found by
    position, not by inspecting `x`, because every extra reference to `x` re-evaluates it
    (polars does not share sub-expressions here) and nested smoothings (MACD signal) blow up.
    A gap (null) in the seed window leaves the seed null; the recursion then starts unseeded.
    """
    row = pl.int_range(pl.len())
    seeded = pl.when(row == start + n - 1).then(x.rolling_mean(n, min_samples=n)).when(row >= start + n).then(x)
    return seeded.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True)


def wilder(x: pl.Expr, n: int, start: int = 0) -> pl.Expr:
    """Wilder's smoothing (RSI, ATR): alpha = 1/n."""
    return seeded_ewm(x, n, 1.0 / n, start)


def ema(x: pl.Expr, n: int, start: int = 0) -> pl.Expr:
    """Exponential moving average with span n: alpha = 2/(n+1)."""
    return seeded_ewm(x, n, 2.0 / (n + 1), start)


def log_return() -> pl.Expr:
    return _close.log().diff()


@register(
    "ret_{w}",
    inputs=("close",),
    tags=("momentum",),
    sets=("core",),
    description="Simple return over w bars: close[t] / close[t-w] - 1.",
)
def ret(w: int) -> pl.Expr:
    return _close / _close.shift(w) - 1.0


@register(
    "logret_1",
    inputs=("close",),
    tags=("momentum",),
    sets=_TA,
    description="One-bar log return: log(close[t] / close[t-1]).",
)
def logret_1() -> pl.Expr:
    return log_return()


@register(
    "vol_{w}",
    inputs=("close",),
    tags=("volatility",),
    sets=_TA,
    min_window=2,
    description="Rolling standard deviation (ddof=1) of one-bar log returns over w bars.",
)
def vol(w: int) -> pl.Expr:
    return log_return().rolling_std(w, min_samples=w)


@register(
    "rsi_{n}",
    params={"n": 14},
    inputs=("close",),
    tags=("momentum", "oscillator"),
    sets=_TA,
    description="Relative Strength Index (0-100) with Wilder smoothing, seeded by the mean of the first n changes.",
)
def rsi(n: int) -> pl.Expr:
    change = _close.diff()
    # The smoothing is linear, so avg gain + avg loss = smoothed |change|: one reference each.
    return (
        100.0 * wilder(change.clip(lower_bound=0.0), n, start=1) / wilder(change.abs(), n, start=1)
    )  # flat: 0/0 → null


def _macd_line(fast: int, slow: int) -> pl.Expr:
    return ema(_close, fast) - ema(_close, slow)


def _macd_signal(fast: int, slow: int, signal: int) -> pl.Expr:
    return ema(_macd_line(fast, slow), signal, start=max(fast, slow) - 1)  # the line starts at the slow EMA


@register(
    "macd_{fast}_{slow}",
    params={"fast": 12, "slow": 26},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD line divided by close: (EMA(fast) - EMA(slow)) / close.",
)
def macd(fast: int, slow: int) -> pl.Expr:
    return _macd_line(fast, slow) / _close


@register(
    "macd_signal_{fast}_{slow}_{signal}",
    params={"fast": 12, "slow": 26, "signal": 9},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD signal line (EMA(signal) of the MACD line) divided by close.",
)
def macd_signal(fast: int, slow: int, signal: int) -> pl.Expr:
    return _macd_signal(fast, slow, signal) / _close


@register(
    "macd_hist_{fast}_{slow}_{signal}",
    params={"fast": 12, "slow": 26, "signal": 9},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD histogram (line - signal) divided by close.",
)
def macd_hist(fast: int, slow: int, signal: int) -> pl.Expr:
    return (_macd_line(fast, slow) - _macd_signal(fast, slow, signal)) / _close


@register(
    "bb_pctb_{n}",
    params={"n": 20, "k": 2.0},
    inputs=("close",),
    tags=("volatility", "oscillator"),
    sets=_TA,
    description="Bollinger %B: where close sits between mean -/+ k population std over n bars (0 = lower, 1 = upper band).",
)
def bb_pctb(n: int, k: float) -> pl.Expr:
    mid = _close.rolling_mean(n, min_samples=n)
    sd = _close.rolling_std(n, min_samples=n, ddof=0)  # Bollinger (and TA-Lib) use the population std
    return (_close - (mid - k * sd)) / (2.0 * k * sd)  # flat window: x/0 → null via the engine


def true_range() -> pl.Expr:
    """max(high - low, |high - prev close|, |low - prev close|); null on a symbol's first bar."""
    prev = _close.shift(1)
    spans = pl.max_horizontal(
        pl.col("high") - pl.col("low"), (pl.col("high") - prev).abs(), (pl.col("low") - prev).abs()
    )
    return pl.when(prev.is_not_null()).then(spans)


@register(
    "atr_{n}",
    params={"n": 14},
    inputs=("high", "low", "close"),
    tags=("volatility",),
    sets=_TA,
    description="Average True Range with Wilder smoothing, divided by close.",
)
def atr(n: int) -> pl.Expr:
    return wilder(true_range(), n, start=1) / _close


@register(
    "volume_z_{n}",
    params={"n": 20},
    inputs=("volume",),
    tags=("volume",),
    sets=("core",),
    description="Z-score of log(1 + volume) against its mean and std (ddof=1) over the last n bars.",
)
def volume_z(n: int) -> pl.Expr:
    lv = pl.col("volume").log1p()  # log1p: zero-volume bars stay finite
    return (lv - lv.rolling_mean(n, min_samples=n)) / lv.rolling_std(n, min_samples=n)


@register(
    "close_ma_{w}",
    inputs=("close",),
    tags=("trend",),
    sets=_TA,
    description="Distance of close from its w-bar simple moving average: close / SMA(w) - 1.",
)
def close_ma(w: int) -> pl.Expr:
    return _close / _close.rolling_mean(w, min_samples=w) - 1.0


@register(
    "hl_range",
    inputs=("high", "low", "close"),
    tags=("volatility", "candle"),
    sets=("core",),
    description="Bar range relative to price: (high - low) / close.",
)
def hl_range() -> pl.Expr:
    return (pl.col("high") - pl.col("low")) / _close
