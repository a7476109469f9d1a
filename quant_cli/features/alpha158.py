"""The "alpha158" set: Qlib's Alpha158 price/volume factors (qlib/contrib/data/loader.py, Alpha158DL).

158 columns from OHLCV: 9 candle-shape (KMID ... KSFT2), 4 price ratios (OPEN0, HIGH0, LOW0,
VWAP0) and 29 rolling operators x 5 windows. Names and formulas follow Qlib: prices are divided
by the current close (candle shapes by the open, as Qlib does), volumes by the current volume,
and the 1e-12 guards in denominators are Qlib's.

Windows: the set expands over `features.alpha158_windows` (default [5, 10, 20, 30, 60], Qlib's),
NOT over `features.windows`, so the published set stays the same whatever windows the recipe
gives the other families. A concrete name adds any window (``include = ["ROC3"]``); a pattern
(``include = ["ROC{w}"]``) expands over alpha158_windows.

Deliberate differences from Qlib, all documented per family:
- Windows must be full (min_samples = window); Qlib starts from a partial window
  (min_periods=1). Values agree once a window is full; warm-up rows are null here.
- VWAP0: Qlib's data has a vwap field; without a `vwap` column the engine uses the typical
  price (high + low + close) / 3 (with a notice).
- RANK is the percentile of today's close in the window, average rank / window, in (0, 1]
  (scipy percentileofscore(kind="rank") / 100 — the same as pandas rank(pct=True) of the last
  value). Qlib's code divides percentileofscore by the window length instead of 100, a scaling bug.
- IMAX/IMIN are Qlib's IdxMax/IdxMin: the 1-based position of the (first) max/min counted from the
  OLDEST bar of the window, divided by the window; days since the max = (1 - IMAX) * window.
- RSQR/CORR/CORD: Qlib blanks values whose window std is below 2e-5 in absolute terms; here a
  window with zero variance gives null (0/0) and nothing else is blanked.

Implementation: every factor is a function over the compiled rolling kernels (features/panel.py,
features/kernels.py); the polars expressions these replaced are the oracle in tests/feature_oracle.
Shared work is computed once: RSV, RSQR, RESI, IMXD, CNTD, SUMD and VSUMD are composites of
other factors' values (RSV from MAX and MIN, RSQR from BETA and STD, RESI from MA and BETA,
IMXD = IMAX - IMIN, *D = *P - *N), SUMP/SUMN use sum(gains) = (sum|change| + (x - x[w])) / 2
(one rolling sum each), and helper series (returns, log volumes) are memoised per panel.
"""

from __future__ import annotations

import numpy as np

from quant_cli.features.panel import Panel, gt, lt
from quant_cli.features.registry import REGISTRY, register

REGISTRY.define_set(
    "alpha158", "Qlib Alpha158: 158 candle, price-ratio and rolling price/volume factors over windows 5/10/20/30/60."
)

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12  # Qlib's denominator guard
_OHLC = ("open", "high", "low", "close")
Array = np.ndarray


def _kbar(pattern: str, description: str, inputs: tuple[str, ...] = _OHLC):
    """A row-wise factor (no window)."""
    return register(
        pattern,
        inputs=inputs,
        tags=("alpha158", "candle"),
        sets=("alpha158",),
        description=description,
        over="row",
        kernel=True,
    )


def _rolling(
    pattern: str,
    description: str,
    inputs: tuple[str, ...] = ("close",),
    tags: tuple[str, ...] = (),
    min_window: int = 1,
    sources: tuple[str, ...] = (),
):
    """A windowed factor; with `sources`, a row-wise combination of other factors at the same window."""
    return register(
        pattern,
        inputs=inputs,
        tags=("alpha158", *tags),
        sets=("alpha158",),
        description=description,
        window_key="alpha158_windows",
        default_windows=WINDOWS,
        min_window=min_window,
        sources=sources,
        over="row" if sources else "symbol",
        kernel=True,
    )


def _ohlc(p: Panel) -> tuple[Array, Array, Array, Array]:
    return p.col("open"), p.col("high"), p.col("low"), p.col("close")


# --- candle shape and price ratios ------------------------------------------------------------


@_kbar("KMID", "Candle body relative to the open: (close - open) / open.")
def kmid(p: Panel) -> Array:
    o, _, _, c = _ohlc(p)
    return (c - o) / o


@_kbar("KLEN", "Candle range relative to the open: (high - low) / open.")
def klen(p: Panel) -> Array:
    o, h, low, _ = _ohlc(p)
    return (h - low) / o


@_kbar("KMID2", "Body as a share of the range: (close - open) / (high - low + 1e-12).")
def kmid2(p: Panel) -> Array:
    o, h, low, c = _ohlc(p)
    return (c - o) / (h - low + EPS)


def _upper(p: Panel) -> Array:
    o, h, _, c = _ohlc(p)
    return h - np.fmax(o, c)  # fmax: a missing side is ignored, as polars' max_horizontal


def _lower(p: Panel) -> Array:
    o, _, low, c = _ohlc(p)
    return np.fmin(o, c) - low


@_kbar("KUP", "Upper shadow relative to the open: (high - max(open, close)) / open.")
def kup(p: Panel) -> Array:
    return _upper(p) / p.col("open")


@_kbar("KUP2", "Upper shadow as a share of the range.")
def kup2(p: Panel) -> Array:
    _, h, low, _ = _ohlc(p)
    return _upper(p) / (h - low + EPS)


@_kbar("KLOW", "Lower shadow relative to the open: (min(open, close) - low) / open.")
def klow(p: Panel) -> Array:
    return _lower(p) / p.col("open")


@_kbar("KLOW2", "Lower shadow as a share of the range.")
def klow2(p: Panel) -> Array:
    _, h, low, _ = _ohlc(p)
    return _lower(p) / (h - low + EPS)


@_kbar("KSFT", "Close's shift within the bar relative to the open: (2 close - high - low) / open.")
def ksft(p: Panel) -> Array:
    o, h, low, c = _ohlc(p)
    return (2.0 * c - h - low) / o


@_kbar("KSFT2", "Close's shift within the bar as a share of the range.")
def ksft2(p: Panel) -> Array:
    _, h, low, c = _ohlc(p)
    return (2.0 * c - h - low) / (h - low + EPS)


@_kbar("OPEN0", "Open relative to the close: open / close.", inputs=("open", "close"))
def open0(p: Panel) -> Array:
    return p.col("open") / p.col("close")


@_kbar("HIGH0", "High relative to the close: high / close.", inputs=("high", "close"))
def high0(p: Panel) -> Array:
    return p.col("high") / p.col("close")


@_kbar("LOW0", "Low relative to the close: low / close.", inputs=("low", "close"))
def low0(p: Panel) -> Array:
    return p.col("low") / p.col("close")


@_kbar(
    "VWAP0",
    "VWAP relative to the close; without a vwap column, the typical price (high + low + close) / 3.",
    inputs=("vwap", "close"),
)
def vwap0(p: Panel) -> Array:
    return p.col("vwap") / p.col("close")


# --- rolling price operators -----------------------------------------------------------------


@_rolling("ROC{w}", "Qlib rate of change: close w bars ago / close.", tags=("momentum",))
def roc(p: Panel, w: int) -> Array:
    c = p.col("close")
    return p.shift(c, w) / c


@_rolling("MA{w}", "Simple moving average of close over w bars / close.", tags=("trend",))
def ma(p: Panel, w: int) -> Array:
    c = p.col("close")
    return p.mean(c, w) / c


@_rolling("STD{w}", "Standard deviation (ddof=1) of close over w bars / close.", tags=("volatility",), min_window=2)
def std(p: Panel, w: int) -> Array:
    c = p.col("close")
    return p.std(c, w) / c


def _sxx(w: int) -> float:
    return w * (w * w - 1) / 12.0  # sum_j (j - mean j)^2 for j = 1..w


@_rolling(
    "BETA{w}", "Slope of the least-squares line of close on time over w bars / close.", tags=("trend",), min_window=2
)
def beta(p: Panel, w: int) -> Array:
    """sum_j (j - mean j) close_j over the window (j = 1..w, oldest first), a weighted rolling sum
    evaluated per window (no running-sum cancellation against the bar index), / Sxx / close."""
    c = p.col("close")
    centre = (w + 1) / 2.0
    weights = np.arange(1, w + 1, dtype=np.float64) - centre
    return p.weighted_sum(c, weights) / _sxx(w) / c


@_rolling(
    "RSQR{w}",
    "R-squared of the least-squares line of close on time over w bars (trend linearity).",
    tags=("trend",),
    min_window=3,
    sources=("BETA{w}", "STD{w}"),
)
def rsqr(p: Panel, beta_: Array, std_: Array, w: int) -> Array:
    # R^2 = slope^2 * Sxx / Syy with Syy = (w - 1) * std^2; both carry 1/close, which cancels
    return beta_**2 * _sxx(w) / ((w - 1) * std_**2)


@_rolling(
    "RESI{w}",
    "Residual of today's close from the least-squares line over w bars / close.",
    tags=("trend",),
    min_window=2,
    sources=("MA{w}", "BETA{w}"),
)
def resi(p: Panel, ma_: Array, beta_: Array, w: int) -> Array:
    # the line through the window's mean point reaches mean + slope * (w - 1) / 2 at today's bar
    return 1.0 - ma_ - beta_ * ((w - 1) / 2.0)


@_rolling("MAX{w}", "Highest high over w bars / close.", inputs=("high", "close"), tags=("volatility",))
def max_(p: Panel, w: int) -> Array:
    return p.max(p.col("high"), w) / p.col("close")


@_rolling("MIN{w}", "Lowest low over w bars / close.", inputs=("low", "close"), tags=("volatility",))
def min_(p: Panel, w: int) -> Array:
    return p.min(p.col("low"), w) / p.col("close")


_QUANTILES = (0.2, 0.8)


@_rolling("QTLU{w}", "80% quantile (linear interpolation) of close over w bars / close.", tags=("volatility",))
def qtlu(p: Panel, w: int) -> Array:
    c = p.col("close")
    return p.order(c, w, _QUANTILES)[0][1] / c


@_rolling("QTLD{w}", "20% quantile (linear interpolation) of close over w bars / close.", tags=("volatility",))
def qtld(p: Panel, w: int) -> Array:
    c = p.col("close")
    return p.order(c, w, _QUANTILES)[0][0] / c


@_rolling(
    "RANK{w}", "Percentile of today's close among the last w closes: average rank / w, in (0, 1].", tags=("momentum",)
)
def rank(p: Panel, w: int) -> Array:
    # average rank / w: ties share the mean of their ranks (pandas rank(pct=True) of the last value)
    return p.order(p.col("close"), w, _QUANTILES)[1] / w  # one sorted window for QTLD, QTLU and RANK


@_rolling(
    "RSV{w}",
    "Close's position in the w-bar range: (close - min low) / (max high - min low + 1e-12).",
    inputs=("close",),
    tags=("momentum",),
    sources=("MAX{w}", "MIN{w}"),
)
def rsv(p: Panel, max_ratio: Array, min_ratio: Array, w: int) -> Array:
    c = p.col("close")
    low = min_ratio * c  # MAX and MIN are the w-bar high / low divided by close: undo it
    return (c - low) / (max_ratio * c - low + EPS)


@_rolling(
    "IMAX{w}",
    "Position of the w-bar high counted from the window's oldest bar, / w (Qlib IdxMax).",
    inputs=("high",),
    tags=("momentum",),
)
def imax(p: Panel, w: int) -> Array:
    # the oldest of tied highs wins (numpy / Qlib argmax semantics)
    return p.argmax(p.col("high"), w) / w


@_rolling(
    "IMIN{w}",
    "Position of the w-bar low counted from the window's oldest bar, / w (Qlib IdxMin).",
    inputs=("low",),
    tags=("momentum",),
)
def imin(p: Panel, w: int) -> Array:
    return p.argmin(p.col("low"), w) / w


@_rolling(
    "IMXD{w}",
    "IMAX - IMIN: positive when the low came before the high.",
    inputs=("high", "low"),
    tags=("momentum",),
    sources=("IMAX{w}", "IMIN{w}"),
)
def imxd(p: Panel, imax_: Array, imin_: Array, w: int) -> Array:
    return imax_ - imin_


# --- price/volume co-movement, up/down counts and sums ---------------------------------------


def _log_volume1(p: Panel) -> Array:
    return p.memo("log_volume1", lambda: np.log(p.col("volume") + 1.0))


def _close_ratio(p: Panel) -> Array:
    return p.memo("close_ratio", lambda: p.col("close") / p.shift(p.col("close"), 1))


def _log_volume_ratio1(p: Panel) -> Array:
    v = p.col("volume")
    return p.memo("log_volume_ratio1", lambda: np.log(v / p.shift(v, 1) + 1.0))


def _abs_return_volume(p: Panel) -> Array:
    return p.memo("abs_return_volume", lambda: np.abs(_close_ratio(p) - 1.0) * p.col("volume"))


@_rolling(
    "CORR{w}",
    "Correlation of close with log(volume + 1) over w bars.",
    inputs=("close", "volume"),
    tags=("volume",),
    min_window=2,
)
def corr(p: Panel, w: int) -> Array:
    return p.corr(p.col("close"), _log_volume1(p), w)


@_rolling(
    "CORD{w}",
    "Correlation of close/close[-1] with log(volume/volume[-1] + 1) over w bars.",
    inputs=("close", "volume"),
    tags=("volume",),
    min_window=2,
)
def cord(p: Panel, w: int) -> Array:
    return p.corr(_close_ratio(p), _log_volume_ratio1(p), w)


def _up(p: Panel) -> Array:
    c = p.col("close")
    return p.memo("close_up", lambda: gt(c, p.shift(c, 1)))


def _down(p: Panel) -> Array:
    c = p.col("close")
    return p.memo("close_down", lambda: lt(c, p.shift(c, 1)))


@_rolling("CNTP{w}", "Share of the last w bars that closed up.", tags=("momentum",))
def cntp(p: Panel, w: int) -> Array:
    return p.mean(_up(p), w)


@_rolling("CNTN{w}", "Share of the last w bars that closed down.", tags=("momentum",))
def cntn(p: Panel, w: int) -> Array:
    return p.mean(_down(p), w)


@_rolling(
    "CNTD{w}", "CNTP - CNTN: up share minus down share over w bars.", tags=("momentum",), sources=("CNTP{w}", "CNTN{w}")
)
def cntd(p: Panel, up: Array, down: Array, w: int) -> Array:
    return up - down


def _gain_share(p: Panel, column: str, w: int, sign: float) -> Array:
    """(sum of gains, or of losses) / (sum |changes| + 1e-12) over w bars, one rolling sum:
    gains and losses over the window are (total +/- net) / 2 with total = sum |changes| and
    net = x - x[w], so the share is 0.5 + 0.5 (s net - eps) / (total + eps)."""
    x = p.col(column)
    total = p.sum(p.memo(("abs_change", column), lambda: np.abs(p.diff(x))), w)
    return 0.5 + 0.5 * (sign * (x - p.shift(x, w)) - EPS) / (total + EPS)


@_rolling(
    "SUMP{w}", "Sum of close gains / sum of absolute close changes over w bars (RSI-like, 0-1).", tags=("momentum",)
)
def sump(p: Panel, w: int) -> Array:
    return _gain_share(p, "close", w, 1.0)


@_rolling("SUMN{w}", "Sum of close losses / sum of absolute close changes over w bars.", tags=("momentum",))
def sumn(p: Panel, w: int) -> Array:
    return _gain_share(p, "close", w, -1.0)


@_rolling(
    "SUMD{w}",
    "(gains - losses) / sum of absolute close changes over w bars: SUMP - SUMN.",
    tags=("momentum",),
    sources=("SUMP{w}", "SUMN{w}"),
)
def sumd(p: Panel, gains: Array, losses: Array, w: int) -> Array:
    return gains - losses


@_rolling("VMA{w}", "Mean volume over w bars / (volume + 1e-12).", inputs=("volume",), tags=("volume",))
def vma(p: Panel, w: int) -> Array:
    v = p.col("volume")
    return p.mean(v, w) / (v + EPS)


@_rolling(
    "VSTD{w}",
    "Standard deviation of volume over w bars / (volume + 1e-12).",
    inputs=("volume",),
    tags=("volume",),
    min_window=2,
)
def vstd(p: Panel, w: int) -> Array:
    v = p.col("volume")
    return p.std(v, w) / (v + EPS)


@_rolling(
    "WVMA{w}",
    "Volume-weighted |return| dispersion: std / mean of |close/close[-1] - 1| * volume over w bars.",
    inputs=("close", "volume"),
    tags=("volume", "volatility"),
    min_window=2,
)
def wvma(p: Panel, w: int) -> Array:
    weighted = _abs_return_volume(p)  # |close/close[-1] - 1| * volume
    return p.std(weighted, w) / (p.mean(weighted, w) + EPS)


@_rolling(
    "VSUMP{w}",
    "Sum of volume increases / sum of absolute volume changes over w bars.",
    inputs=("volume",),
    tags=("volume",),
)
def vsump(p: Panel, w: int) -> Array:
    return _gain_share(p, "volume", w, 1.0)


@_rolling(
    "VSUMN{w}",
    "Sum of volume decreases / sum of absolute volume changes over w bars.",
    inputs=("volume",),
    tags=("volume",),
)
def vsumn(p: Panel, w: int) -> Array:
    return _gain_share(p, "volume", w, -1.0)


@_rolling(
    "VSUMD{w}",
    "(volume increases - decreases) / sum of absolute volume changes over w bars: VSUMP - VSUMN.",
    inputs=("volume",),
    tags=("volume",),
    sources=("VSUMP{w}", "VSUMN{w}"),
)
def vsumd(p: Panel, gains: Array, losses: Array, w: int) -> Array:
    return gains - losses
