"""The "core" set: ~20 causal, scale-free features (returns, volatility, RSI, MACD, Bollinger, ATR...).

Every family computes on the compiled kernels (features/panel.py), which never cross symbols and
only look backward (shift(n >= 0), trailing windows, seeded recursions), so a value at bar t
depends on bars <= t only — tests/test_causality.py proves it for every registered feature, and
tests/test_kernel_oracle.py checks each against the polars expression it replaced.
Rolling windows require a full window (min_samples = window): warm-up
rows are null rather than computed from a partial window.

Prices are divided out (returns, ratios to close) so values are comparable across symbols.
"""

from __future__ import annotations

import numpy as np

from quant_cli.features.panel import Panel
from quant_cli.features.registry import REGISTRY, register

REGISTRY.define_set(
    "core", "About 20 causal, scale-free price/volume features: returns, volatility, RSI, MACD, Bollinger, ATR, volume."
)
# Defined here so the core families that are TA classics can join it; the rest is in ta.py.
REGISTRY.define_set(
    "ta",
    "Classic technical indicators (TA-Lib definitions), scale-free: RSI, "
    "MACD, Bollinger, ATR, ADX, stochastic, CCI, OBV, MFI, ...",
)
_TA = ("core", "ta")
Array = np.ndarray


def _core(pattern: str, **kw):  # noqa: ANN003
    return register(pattern, kernel=True, **kw)


def seeded_ewm(p: Panel, x: Array, n: int, alpha: float, start: int = 0) -> Array:
    """Recursive smoothing seeded with the simple mean of the first `n` values (TA-Lib style).

    `start` is the number of leading missing rows of `x` (1 after a diff). With s = start + n - 1:
    y[s] = mean(x[start..s]); y[t] = (1 - alpha) * y[t-1] + alpha * x[t]; rows before s are missing.
    A gap in the seed window leaves the seed missing; the recursion then starts unseeded.
    """
    return p.seeded_ewm(x, n, alpha, start)


def wilder(p: Panel, x: Array, n: int, start: int = 0) -> Array:
    """Wilder's smoothing (RSI, ATR): alpha = 1/n."""
    return seeded_ewm(p, x, n, 1.0 / n, start)


def ema(p: Panel, x: Array, n: int, start: int = 0) -> Array:
    """Exponential moving average with span n: alpha = 2/(n+1)."""
    return seeded_ewm(p, x, n, 2.0 / (n + 1), start)


def log_return(p: Panel) -> Array:
    return p.memo("log_return", lambda: p.diff(np.log(p.col("close"))))


@_core(
    "ret_{w}",
    inputs=("close",),
    tags=("momentum",),
    sets=("core",),
    description="Simple return over w bars: close[t] / close[t-w] - 1.",
)
def ret(p: Panel, w: int) -> Array:
    c = p.col("close")
    return c / p.shift(c, w) - 1.0


@_core(
    "logret_1",
    inputs=("close",),
    tags=("momentum",),
    sets=_TA,
    description="One-bar log return: log(close[t] / close[t-1]).",
)
def logret_1(p: Panel) -> Array:
    return log_return(p)


@_core(
    "vol_{w}",
    inputs=("close",),
    tags=("volatility",),
    sets=_TA,
    min_window=2,
    description="Rolling standard deviation (ddof=1) of one-bar log returns over w bars.",
)
def vol(p: Panel, w: int) -> Array:
    return p.std(log_return(p), w)


@_core(
    "rsi_{n}",
    params={"n": 14},
    inputs=("close",),
    tags=("momentum", "oscillator"),
    sets=_TA,
    description="Relative Strength Index (0-100) with Wilder smoothing, seeded by the mean of the first n changes.",
)
def rsi(p: Panel, n: int) -> Array:
    change = p.diff(p.col("close"))
    # The smoothing is linear, so avg gain + avg loss = smoothed |change|.
    return 100.0 * wilder(p, np.maximum(change, 0.0), n, start=1) / wilder(p, np.abs(change), n, start=1)  # flat: 0/0


def _macd_line(p: Panel, fast: int, slow: int) -> Array:
    c = p.col("close")
    return p.memo(("macd", fast, slow), lambda: ema(p, c, fast) - ema(p, c, slow))


def _macd_signal(p: Panel, fast: int, slow: int, signal: int) -> Array:
    line = _macd_line(p, fast, slow)
    return p.memo(("macd_signal", fast, slow, signal), lambda: ema(p, line, signal, start=max(fast, slow) - 1))


@_core(
    "macd_{fast}_{slow}",
    params={"fast": 12, "slow": 26},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD line divided by close: (EMA(fast) - EMA(slow)) / close.",
)
def macd(p: Panel, fast: int, slow: int) -> Array:
    return _macd_line(p, fast, slow) / p.col("close")


@_core(
    "macd_signal_{fast}_{slow}_{signal}",
    params={"fast": 12, "slow": 26, "signal": 9},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD signal line (EMA(signal) of the MACD line) divided by close.",
)
def macd_signal(p: Panel, fast: int, slow: int, signal: int) -> Array:
    return _macd_signal(p, fast, slow, signal) / p.col("close")


@_core(
    "macd_hist_{fast}_{slow}_{signal}",
    params={"fast": 12, "slow": 26, "signal": 9},
    inputs=("close",),
    tags=("trend", "momentum"),
    sets=_TA,
    description="MACD histogram (line - signal) divided by close.",
)
def macd_hist(p: Panel, fast: int, slow: int, signal: int) -> Array:
    return (_macd_line(p, fast, slow) - _macd_signal(p, fast, slow, signal)) / p.col("close")


@_core(
    "bb_pctb_{n}",
    params={"n": 20, "k": 2.0},
    inputs=("close",),
    tags=("volatility", "oscillator"),
    sets=_TA,
    description="Bollinger %B: where close sits between mean -/+ k population std over n bars "
    "(0 = lower, 1 = upper band).",
)
def bb_pctb(p: Panel, n: int, k: float) -> Array:
    c = p.col("close")
    mid = p.mean(c, n)
    sd = p.std(c, n, ddof=0)  # Bollinger (and TA-Lib) use the population std
    return (c - (mid - k * sd)) / (2.0 * k * sd)  # flat window: x/0 → null via the engine


def true_range(p: Panel) -> Array:
    """max(high - low, |high - prev close|, |low - prev close|); missing on a symbol's first bar."""

    def make() -> Array:
        high, low = p.col("high"), p.col("low")
        prev = p.shift(p.col("close"), 1)
        spans = np.fmax(np.fmax(high - low, np.abs(high - prev)), np.abs(low - prev))  # fmax skips a missing side
        return np.where(np.isnan(prev), np.nan, spans)

    return p.memo("true_range", make)


@_core(
    "atr_{n}",
    params={"n": 14},
    inputs=("high", "low", "close"),
    tags=("volatility",),
    sets=_TA,
    description="Average True Range with Wilder smoothing, divided by close.",
)
def atr(p: Panel, n: int) -> Array:
    return wilder(p, true_range(p), n, start=1) / p.col("close")


@_core(
    "volume_z_{n}",
    params={"n": 20},
    inputs=("volume",),
    tags=("volume",),
    sets=("core",),
    description="Z-score of log(1 + volume) against its mean and std (ddof=1) over the last n bars.",
)
def volume_z(p: Panel, n: int) -> Array:
    lv = np.log1p(p.col("volume"))  # log1p: zero-volume bars stay finite
    return (lv - p.mean(lv, n)) / p.std(lv, n)


@_core(
    "close_ma_{w}",
    inputs=("close",),
    tags=("trend",),
    sets=_TA,
    description="Distance of close from its w-bar simple moving average: close / SMA(w) - 1.",
)
def close_ma(p: Panel, w: int) -> Array:
    c = p.col("close")
    return c / p.mean(c, w) - 1.0


@_core(
    "hl_range",
    inputs=("high", "low", "close"),
    tags=("volatility", "candle"),
    sets=("core",),
    description="Bar range relative to price: (high - low) / close.",
)
def hl_range(p: Panel) -> Array:
    return (p.col("high") - p.col("low")) / p.col("close")
