"""The "ta" set: classic technical indicators, as TA-Lib defines them, made scale-free.

The set (defined in core.py, whose TA families join it) also contains the core families that are TA classics (RSI, MACD line/signal/hist,
Bollinger %B, ATR, SMA gap, close-to-close volatility, one-bar log return); this module adds the
rest. tests/test_ta_oracle.py compares every one with the TA-Lib Python package (or, where TA-Lib
has no such indicator, an independent numpy implementation).

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

import polars as pl

from feature_oracle.core import ema, log_return, seeded_ewm
from feature_oracle._registry import register

_c, _o, _h, _l, _v = (pl.col(c) for c in ("close", "open", "high", "low", "volume"))
_HLC = ("high", "low", "close")


def _ta(pattern: str, description: str, inputs: tuple[str, ...] = ("close",), tags: tuple[str, ...] = (), **kw):
    return register(pattern, inputs=inputs, tags=tags, sets=("ta",), description=description, **kw)


def _row() -> pl.Expr:
    return pl.int_range(pl.len())


def _typical() -> pl.Expr:
    return (_h + _l + _c) / 3.0


def _range_position(n: int) -> pl.Expr:
    """(close - lowest low) / (highest high - lowest low) over n bars, in [0, 1]."""
    low = _l.rolling_min(n, min_samples=n)
    return (_c - low) / (_h.rolling_max(n, min_samples=n) - low)


@_ta(
    "bb_width_{n}",
    "Bollinger band width: (upper - lower) / middle = 2 k population-std / SMA over n bars.",
    tags=("volatility",),
    params={"n": 20, "k": 2.0},
)
def bb_width(n: int, k: float) -> pl.Expr:
    return 2.0 * k * _c.rolling_std(n, min_samples=n, ddof=0) / _c.rolling_mean(n, min_samples=n)


def _directional_movement() -> tuple[pl.Expr, pl.Expr]:
    """(+DM, -DM) as TA-Lib defines them; null on a symbol's first bar."""
    up, down = _h.diff(), -_l.diff()
    plus = pl.when(up.is_null()).then(None).when((up > 0) & (up > down)).then(up).otherwise(0.0)
    minus = pl.when(down.is_null()).then(None).when((down > 0) & (down > up)).then(down).otherwise(0.0)
    return plus, minus


def _wilder_sum(x: pl.Expr, n: int) -> pl.Expr:
    """TA-Lib's DM/TR smoothing divided by n: seeded at bar n-1 with the sum of bars 1..n-1, alpha 1/n."""
    seeded = pl.when(_row() == n - 1).then(x.rolling_sum(n - 1, min_samples=n - 1) / n).when(_row() >= n).then(x)
    return seeded.ewm_mean(alpha=1.0 / n, adjust=False, ignore_nulls=True)


@_ta(
    "adx_{n}",
    "Average Directional Index (0-100, Wilder/TA-Lib): trend strength regardless of direction.",
    inputs=_HLC,
    tags=("trend",),
    params={"n": 14},
)
def adx(n: int) -> pl.Expr:
    plus, minus = (_wilder_sum(dm, n) for dm in _directional_movement())
    # DX = 100 |-DI - +DI| / (-DI + +DI); the smoothed true range divides both DIs and cancels.
    dx = pl.when(_row() >= n).then(100.0 * (minus - plus).abs() / (minus + plus))
    return seeded_ewm(dx, n, 1.0 / n, start=n)  # first ADX at bar 2n-1: the mean of n DX values


@_ta(
    "stoch_k_{n}",
    "Slow stochastic %K (0-100): SMA(3) of 100 (close - lowest low) / (highest high - lowest low) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14, "smooth": 3},
)
def stoch_k(n: int, smooth: int) -> pl.Expr:
    return (100.0 * _range_position(n)).rolling_mean(smooth, min_samples=smooth)


@_ta(
    "stoch_d_{n}",
    "Slow stochastic %D (0-100): SMA(3) of slow %K.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14, "smooth": 3},
)
def stoch_d(n: int, smooth: int) -> pl.Expr:
    return stoch_k(n, smooth).rolling_mean(smooth, min_samples=smooth)


@_ta(
    "cci_{n}",
    "Commodity Channel Index: (typical price - SMA) / (0.015 x mean absolute deviation) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 20},
)
def cci(n: int) -> pl.Expr:
    tp = _typical()
    sma = tp.rolling_mean(n, min_samples=n)
    # The mean deviation is around TODAY's SMA, so it is not a rolling statistic: sum n lags.
    deviation = pl.sum_horizontal((tp.shift(k) - sma).abs() for k in range(n)) / n
    return (tp - sma) / (0.015 * deviation)


@_ta(
    "obv_net_{n}",
    "Scale-free OBV: n-bar change of On-Balance Volume / n-bar total volume, in [-1, 1].",
    inputs=("close", "volume"),
    tags=("volume",),
    params={"n": 20},
)
def obv_net(n: int) -> pl.Expr:
    signed = _c.diff().sign() * _v
    return signed.rolling_sum(n, min_samples=n) / _v.rolling_sum(n, min_samples=n)


@_ta(
    "mfi_{n}",
    "Money Flow Index (0-100): volume-weighted RSI of the typical price over n bars.",
    inputs=(*_HLC, "volume"),
    tags=("volume", "oscillator"),
    params={"n": 14},
)
def mfi(n: int) -> pl.Expr:
    tp = _typical()
    change, flow = tp.diff(), tp * _v

    def flows(up: bool) -> pl.Expr:
        moved = change > 0 if up else change < 0
        return pl.when(change.is_null()).then(None).when(moved).then(flow).otherwise(0.0).rolling_sum(n, min_samples=n)

    positive = flows(True)
    return 100.0 * positive / (positive + flows(False))


@_ta(
    "willr_{n}",
    "Williams %R (-100-0): -100 (highest high - close) / (highest high - lowest low) over n bars.",
    inputs=_HLC,
    tags=("momentum", "oscillator"),
    params={"n": 14},
)
def willr(n: int) -> pl.Expr:
    return 100.0 * _range_position(n) - 100.0  # -100 (H - C) / (H - L) = 100 (C - L) / (H - L) - 100


@_ta(
    "close_ema_{w}",
    "Distance of close from its w-bar EMA (seeded with the SMA, as TA-Lib): close / EMA(w) - 1.",
    tags=("trend",),
)
def close_ema(w: int) -> pl.Expr:
    return _c / ema(_c, w) - 1.0


@_ta(
    "park_vol_{w}",
    "Parkinson volatility over w bars: sqrt(mean(ln(high/low)^2) / (4 ln 2)).",
    inputs=("high", "low"),
    tags=("volatility",),
)
def park_vol(w: int) -> pl.Expr:
    return ((_h / _l).log().pow(2).rolling_mean(w, min_samples=w) / (4.0 * math.log(2.0))).sqrt()


@_ta(
    "gk_vol_{w}",
    "Garman-Klass volatility over w bars: sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2)).",
    inputs=("open", "high", "low", "close"),
    tags=("volatility",),
)
def gk_vol(w: int) -> pl.Expr:
    per_bar = 0.5 * (_h / _l).log().pow(2) - (2.0 * math.log(2.0) - 1.0) * (_c / _o).log().pow(2)
    return per_bar.rolling_mean(w, min_samples=w).sqrt()


@_ta(
    "skew_{w}",
    "Sample skewness (bias-corrected, as pandas) of one-bar log returns over w bars.",
    tags=("volatility",),
    min_window=3,
)
def skew(w: int) -> pl.Expr:
    return log_return().rolling_skew(w, bias=False, min_samples=w)


@_ta(
    "kurt_{w}",
    "Sample excess kurtosis (bias-corrected, as pandas) of one-bar log returns over w bars.",
    tags=("volatility",),
    min_window=4,
)
def kurt(w: int) -> pl.Expr:
    return log_return().rolling_kurtosis(w, fisher=True, bias=False, min_samples=w)


def _band_energy(n: int, ks: range) -> pl.Expr:
    """Share of the window's non-constant log-return energy in DFT bins `ks` (rolling, causal).

    |X_k|^2 of the window ending at t equals C_k^2 + S_k^2 with C_k, S_k rolling sums of
    r_j cos(2 pi k j / n) and r_j sin(2 pi k j / n) over the window (j = row number): shifting the
    window only rotates the phase. The non-DC total comes from Parseval: n sum r^2 - (sum r)^2.
    Bins 0 < k < n/2 stand for two symmetric bins; the Nyquist bin k = n/2 for one.
    """
    r = log_return()
    angle = (2.0 * math.pi / n) * (_row() % n).cast(pl.Float64)

    def power(k: int) -> pl.Expr:
        cos, sin = ((r * fn(k * angle)).rolling_sum(n, min_samples=n) for fn in (pl.Expr.cos, pl.Expr.sin))
        return (1.0 if 2 * k == n else 2.0) * (cos.pow(2) + sin.pow(2))

    total = n * r.pow(2).rolling_sum(n, min_samples=n) - r.rolling_sum(n, min_samples=n).pow(2)
    return pl.sum_horizontal(power(k) for k in ks) / total


@_ta(
    "fft_low_{n}",
    "Spectral: share of log-return variance in periods of n/4 to n bars (DFT bins 1-4 of a rolling n-bar window).",
    tags=("spectral",),
    params={"n": 32},
)
def fft_low(n: int) -> pl.Expr:
    return _band_energy(n, range(1, n // 8 + 1))


@_ta(
    "fft_high_{n}",
    "Spectral: share of log-return variance in periods of 2 to ~3.6 bars (DFT bins n/4+1 .. n/2, rolling n-bar window).",
    tags=("spectral",),
    params={"n": 32},
)
def fft_high(n: int) -> pl.Expr:
    return _band_energy(n, range(n // 4 + 1, n // 2 + 1))


@_ta(
    "regime_bull_{w}",
    "Soft bull-regime probability: logistic of the t-statistic of the mean log return over w bars (bear = 1 - bull).",
    tags=("regime",),
    min_window=3,
)
def regime_bull(w: int) -> pl.Expr:
    r = log_return()
    t_stat = r.rolling_mean(w, min_samples=w) / r.rolling_std(w, min_samples=w) * math.sqrt(w)
    return 1.0 / (1.0 + (-t_stat).exp())
