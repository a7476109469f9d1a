"""The "ta" set: classic technical indicators, as TA-Lib defines them, made scale-free.

The set (defined in core.py, whose TA families join it) also contains the core families that are TA
classics (RSI, MACD line/signal/hist, Bollinger %B, ATR, SMA gap, close-to-close volatility, one-bar
log return); this module adds the rest. tests/test_ta_oracle.py compares every one with the TA-Lib
Python package (or, where TA-Lib has no such indicator, an independent numpy implementation).

Conventions:
- Oscillators keep their textbook 0-100 (or -100-0) scale; price-valued indicators are divided by
  the close (or expressed as a ratio) so values compare across symbols.
- Warm-up follows TA-Lib's lookback: the first value appears at the same bar as TA-Lib's.
- Where TA-Lib outputs 0 for a 0/0 (flat window: Williams %R, stochastic, CCI, MFI) the value
  here is null: "undefined" is not "neutral".
- OBV is cumulative from an arbitrary start, so it is not comparable across symbols or time; the
  feature is its n-bar change divided by the n-bar total volume (obv_net_n), in [-1, 1]: the
  share of recent volume traded on up bars minus that on down bars.
"""

from __future__ import annotations

import math

import numpy as np

from quant_cli.features import kernels
from quant_cli.features.core import ema, log_return, seeded_ewm
from quant_cli.features.panel import Panel
from quant_cli.features.registry import register

_HLC = ("high", "low", "close")
Array = np.ndarray


def _ta(pattern: str, description: str, inputs: tuple[str, ...] = ("close",), tags: tuple[str, ...] = (), **kw):  # noqa: ANN003
    return register(pattern, inputs=inputs, tags=tags, sets=("ta",), description=description, kernel=True, **kw)


def _typical(p: Panel) -> Array:
    # * (1/3), not / 3: the rounding polars gives `/ 3.0`, so a price change that is zero on a
    # price grid stays exactly zero (MFI counts a bar as up, down or neither by its sign).
    return p.memo("typical", lambda: (p.col("high") + p.col("low") + p.col("close")) * (1.0 / 3.0))


def _range_position(p: Panel, n: int) -> Array:
    """(close - lowest low) / (highest high - lowest low) over n bars, in [0, 1]."""

    def make() -> Array:
        low = p.min(p.col("low"), n)
        return (p.col("close") - low) / (p.max(p.col("high"), n) - low)

    return p.memo(("range_position", n), make)


@_ta(
    "bb_width_{n}",
    "Bollinger band width: (upper - lower) / middle = 2 k population-std / SMA over n bars.",
    tags=("volatility",),
    params={"n": 20, "k": 2.0},
)
def bb_width(p: Panel, n: int, k: float) -> Array:
    c = p.col("close")
    return 2.0 * k * p.std(c, n, ddof=0) / p.mean(c, n)


def _directional_movement(p: Panel) -> tuple[Array, Array]:
    """(+DM, -DM) as TA-Lib defines them; missing on a symbol's first bar."""
    up, down = p.diff(p.col("high")), -p.diff(p.col("low"))
    missing_up, missing_down = np.isnan(up), np.isnan(down)
    with np.errstate(invalid="ignore"):  # a comparison with a missing side is false (polars: null → otherwise)
        plus = np.where(missing_up, np.nan, np.where((up > 0) & (up > down), up, 0.0))
        minus = np.where(missing_down, np.nan, np.where((down > 0) & (down > up), down, 0.0))
    return plus, minus


def _wilder_sum(p: Panel, x: Array, n: int) -> Array:
    """TA-Lib's DM/TR smoothing divided by n: seeded at bar n-1 with the sum of bars 1..n-1 / n, alpha 1/n."""
    return kernels.seeded_ewm(x, p.offsets, 1.0 / n, n - 1, n - 1, n)


@_ta(
    "adx_{n}",
    "Average Directional Index (0-100, Wilder/TA-Lib): trend strength regardless of direction.",
    inputs=_HLC,
    tags=("trend",),
    params={"n": 14},
)
def adx(p: Panel, n: int) -> Array:
    plus, minus = (_wilder_sum(p, dm, n) for dm in _directional_movement(p))
    # DX = 100 |-DI - +DI| / (-DI + +DI); the smoothed true range divides both DIs and cancels.
    dx = np.where(p.position >= n, 100.0 * np.abs(minus - plus) / (minus + plus), np.nan)
    # 0/0 (no movement at all) is a NaN VALUE in polars, which poisons its ewm from there on,
    # while a missing row is skipped: the kernel poisons on inf, so hand it inf for those.
    dx = np.where((minus + plus == 0.0) & (p.position >= n), np.inf, dx)
    return seeded_ewm(p, dx, n, 1.0 / n, start=n)  # first ADX at bar 2n-1: the mean of n DX values


def _stoch_k(p: Panel, n: int, smooth: int) -> Array:
    return p.memo(("stoch_k", n, smooth), lambda: p.mean(100.0 * _range_position(p, n), smooth))


@_ta(
    "stoch_k_{n}",
    "Slow stochastic %K (0-100): SMA(3) of 100 (close - lowest low) / (highest high - lowest low) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14, "smooth": 3},
)
def stoch_k(p: Panel, n: int, smooth: int) -> Array:
    return _stoch_k(p, n, smooth)


@_ta(
    "stoch_d_{n}",
    "Slow stochastic %D (0-100): SMA(3) of slow %K.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14, "smooth": 3},
)
def stoch_d(p: Panel, n: int, smooth: int) -> Array:
    return p.mean(_stoch_k(p, n, smooth), smooth)


@_ta(
    "cci_{n}",
    "Commodity Channel Index: (typical price - SMA) / (0.015 x mean absolute deviation) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 20},
)
def cci(p: Panel, n: int) -> Array:
    tp = _typical(p)
    sma = p.mean(tp, n)
    # The mean deviation is around TODAY's SMA, so it is not a rolling statistic: sum n lags.
    # polars' sum_horizontal skips a missing lag, so a missing term adds nothing.
    deviation = sum(np.nan_to_num(np.abs(p.shift(tp, k) - sma), nan=0.0) for k in range(n)) / n
    return (tp - sma) / (0.015 * deviation)


@_ta(
    "obv_net_{n}",
    "Scale-free OBV: n-bar change of On-Balance Volume / n-bar total volume, in [-1, 1].",
    inputs=("close", "volume"),
    tags=("volume",),
    params={"n": 20},
)
def obv_net(p: Panel, n: int) -> Array:
    v = p.col("volume")
    signed = np.sign(p.diff(p.col("close"))) * v
    return p.sum(signed, n) / p.sum(v, n)


@_ta(
    "mfi_{n}",
    "Money Flow Index (0-100): volume-weighted RSI of the typical price over n bars.",
    inputs=(*_HLC, "volume"),
    tags=("volume", "oscillator"),
    params={"n": 14},
)
def mfi(p: Panel, n: int) -> Array:
    tp = _typical(p)
    change, flow = p.diff(tp), tp * p.col("volume")
    with np.errstate(invalid="ignore"):
        positive = p.sum(np.where(np.isnan(change), np.nan, np.where(change > 0, flow, 0.0)), n)
        negative = p.sum(np.where(np.isnan(change), np.nan, np.where(change < 0, flow, 0.0)), n)
    return 100.0 * positive / (positive + negative)


@_ta(
    "willr_{n}",
    "Williams %R (-100-0): -100 (highest high - close) / (highest high - lowest low) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14},
)
def willr(p: Panel, n: int) -> Array:
    return 100.0 * _range_position(p, n) - 100.0  # -100 (H - C) / (H - L) = 100 (C - L) / (H - L) - 100


@_ta(
    "close_ema_{w}",
    "Distance of close from its w-bar EMA (seeded with the SMA, as TA-Lib): close / EMA(w) - 1.",
    tags=("trend",),
)
def close_ema(p: Panel, w: int) -> Array:
    c = p.col("close")
    return c / ema(p, c, w) - 1.0


@_ta(
    "park_vol_{w}",
    "Parkinson volatility over w bars: sqrt(mean(ln(high/low)^2) / (4 ln 2)).",
    inputs=("high", "low"),
    tags=("volatility",),
)
def park_vol(p: Panel, w: int) -> Array:
    squared = p.memo("log_hl_sq", lambda: np.log(p.col("high") / p.col("low")) ** 2)
    return np.sqrt(p.mean(squared, w) / (4.0 * math.log(2.0)))


@_ta(
    "gk_vol_{w}",
    "Garman-Klass volatility over w bars: sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2)).",
    inputs=("open", "high", "low", "close"),
    tags=("volatility",),
)
def gk_vol(p: Panel, w: int) -> Array:
    def make() -> Array:
        hl, co = np.log(p.col("high") / p.col("low")), np.log(p.col("close") / p.col("open"))
        return 0.5 * hl**2 - (2.0 * math.log(2.0) - 1.0) * co**2

    return np.sqrt(p.mean(p.memo("gk_per_bar", make), w))


@_ta(
    "skew_{w}",
    "Sample skewness (bias-corrected, as pandas) of one-bar log returns over w bars.",
    tags=("volatility",),
    min_window=3,
)
def skew(p: Panel, w: int) -> Array:
    return p.skew(log_return(p), w)


@_ta(
    "kurt_{w}",
    "Sample excess kurtosis (bias-corrected, as pandas) of one-bar log returns over w bars.",
    tags=("volatility",),
    min_window=4,
)
def kurt(p: Panel, w: int) -> Array:
    return p.kurt(log_return(p), w)


def _band_energy(p: Panel, n: int, ks: range) -> Array:
    """Share of the window's non-constant log-return energy in DFT bins `ks` (rolling, causal).

    |X_k|^2 of the window ending at t equals C_k^2 + S_k^2 with C_k, S_k rolling sums of
    r_j cos(2 pi k j / n) and r_j sin(2 pi k j / n) over the window (j = row number): shifting the
    window only rotates the phase. The non-DC total comes from Parseval: n sum r^2 - (sum r)^2.
    Bins 0 < k < n/2 stand for two symmetric bins; the Nyquist bin k = n/2 for one.
    """
    r = log_return(p)
    angle = (2.0 * math.pi / n) * (p.position % n)

    def power(k: int) -> Array:
        cos, sin = (p.sum(r * fn(k * angle), n) for fn in (np.cos, np.sin))
        return (1.0 if 2 * k == n else 2.0) * (cos**2 + sin**2)

    total = n * p.sum(r**2, n) - p.sum(r, n) ** 2
    return sum(power(k) for k in ks) / total


@_ta(
    "fft_low_{n}",
    "Spectral: share of log-return variance in periods of n/4 to n bars (DFT bins 1-4 of a rolling n-bar window).",
    tags=("spectral",),
    params={"n": 32},
)
def fft_low(p: Panel, n: int) -> Array:
    return _band_energy(p, n, range(1, n // 8 + 1))


@_ta(
    "fft_high_{n}",
    "Spectral: share of log-return variance in periods of 2 to ~3.6 bars "
    "(DFT bins n/4+1 .. n/2, rolling n-bar window).",
    tags=("spectral",),
    params={"n": 32},
)
def fft_high(p: Panel, n: int) -> Array:
    return _band_energy(p, n, range(n // 4 + 1, n // 2 + 1))


@_ta(
    "regime_bull_{w}",
    "Soft bull-regime probability: logistic of the t-statistic of the mean log return over w bars (bear = 1 - bull).",
    tags=("regime",),
    min_window=3,
)
def regime_bull(p: Panel, w: int) -> Array:
    r = log_return(p)
    t_stat = p.mean(r, w) / p.std(r, w) * math.sqrt(w)
    return 1.0 / (1.0 + np.exp(-t_stat))
