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

Performance: every reference re-evaluates its sub-expression (polars shares nothing inside agg),
so shared work is computed once: RSV, RSQR, RESI, IMXD, CNTD, SUMD and VSUMD are row-wise
composites of other factors' columns (RSV from MAX and MIN, RSQR from BETA and STD, RESI from MA
and BETA, IMXD = IMAX - IMIN, *D = *P - *N), SUMP/SUMN use
sum(gains) = (sum|change| + (x - x[w])) / 2 (one rolling sum each), arg-max positions use one
integer rolling max over a per-symbol key computed once (see _extremum_key), and the
candle/price ratios run row-wise without grouping.
"""

from __future__ import annotations

import polars as pl

from feature_oracle._registry import REGISTRY, register

REGISTRY.define_set(
    "alpha158", "Qlib Alpha158: 158 candle, price-ratio and rolling price/volume factors over windows 5/10/20/30/60."
)

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12  # Qlib's denominator guard
_c, _o, _h, _l, _v = (pl.col(c) for c in ("close", "open", "high", "low", "volume"))
_OHLC = ("open", "high", "low", "close")


def _kbar(pattern: str, description: str, inputs: tuple[str, ...] = _OHLC):
    """A row-wise factor (no window): computed without per-symbol grouping."""
    return register(
        pattern, inputs=inputs, tags=("alpha158", "candle"), sets=("alpha158",), description=description, over="row"
    )


def _rolling(
    pattern: str,
    description: str,
    inputs: tuple[str, ...] = ("close",),
    tags: tuple[str, ...] = (),
    min_window: int = 1,
    derived: tuple[str, ...] = (),
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
        derived=derived,
        sources=sources,
        over="row" if sources else "symbol",
    )


def _full(x: pl.Expr, w: int, op: str) -> pl.Expr:
    """x.rolling_<op>(w) over a full window only."""
    return getattr(x, f"rolling_{op}")(w, min_samples=w)


def _row() -> pl.Expr:
    return pl.int_range(pl.len(), dtype=pl.Int64)


# --- candle shape and price ratios ------------------------------------------------------------


@_kbar("KMID", "Candle body relative to the open: (close - open) / open.")
def kmid() -> pl.Expr:
    return (_c - _o) / _o


@_kbar("KLEN", "Candle range relative to the open: (high - low) / open.")
def klen() -> pl.Expr:
    return (_h - _l) / _o


@_kbar("KMID2", "Body as a share of the range: (close - open) / (high - low + 1e-12).")
def kmid2() -> pl.Expr:
    return (_c - _o) / (_h - _l + EPS)


@_kbar("KUP", "Upper shadow relative to the open: (high - max(open, close)) / open.")
def kup() -> pl.Expr:
    return (_h - pl.max_horizontal(_o, _c)) / _o


@_kbar("KUP2", "Upper shadow as a share of the range.")
def kup2() -> pl.Expr:
    return (_h - pl.max_horizontal(_o, _c)) / (_h - _l + EPS)


@_kbar("KLOW", "Lower shadow relative to the open: (min(open, close) - low) / open.")
def klow() -> pl.Expr:
    return (pl.min_horizontal(_o, _c) - _l) / _o


@_kbar("KLOW2", "Lower shadow as a share of the range.")
def klow2() -> pl.Expr:
    return (pl.min_horizontal(_o, _c) - _l) / (_h - _l + EPS)


@_kbar("KSFT", "Close's shift within the bar relative to the open: (2 close - high - low) / open.")
def ksft() -> pl.Expr:
    return (2.0 * _c - _h - _l) / _o


@_kbar("KSFT2", "Close's shift within the bar as a share of the range.")
def ksft2() -> pl.Expr:
    return (2.0 * _c - _h - _l) / (_h - _l + EPS)


@_kbar("OPEN0", "Open relative to the close: open / close.", inputs=("open", "close"))
def open0() -> pl.Expr:
    return _o / _c


@_kbar("HIGH0", "High relative to the close: high / close.", inputs=("high", "close"))
def high0() -> pl.Expr:
    return _h / _c


@_kbar("LOW0", "Low relative to the close: low / close.", inputs=("low", "close"))
def low0() -> pl.Expr:
    return _l / _c


@_kbar(
    "VWAP0",
    "VWAP relative to the close; without a vwap column, the typical price (high + low + close) / 3.",
    inputs=("vwap", "close"),
)
def vwap0() -> pl.Expr:
    return pl.col("vwap") / _c


# --- rolling price operators -----------------------------------------------------------------


@_rolling("ROC{w}", "Qlib rate of change: close w bars ago / close.", tags=("momentum",))
def roc(w: int) -> pl.Expr:
    return _c.shift(w) / _c


@_rolling("MA{w}", "Simple moving average of close over w bars / close.", tags=("trend",))
def ma(w: int) -> pl.Expr:
    return _full(_c, w, "mean") / _c


@_rolling("STD{w}", "Standard deviation (ddof=1) of close over w bars / close.", tags=("volatility",), min_window=2)
def std(w: int) -> pl.Expr:
    return _full(_c, w, "std") / _c


def _slope_sum(x: pl.Expr, w: int) -> pl.Expr:
    """sum_j (j - mean j) * x_j over the window (j = 1..w, oldest first): the regression numerator.

    A weighted rolling sum evaluates each window directly, so there is no running-sum
    cancellation against the bar index (which grows with history length).
    """
    centre = (w + 1) / 2.0
    return x.rolling_sum(w, weights=[j - centre for j in range(1, w + 1)], min_samples=w)


def _sxx(w: int) -> float:
    return w * (w * w - 1) / 12.0  # sum_j (j - mean j)^2 for j = 1..w


@_rolling(
    "BETA{w}", "Slope of the least-squares line of close on time over w bars / close.", tags=("trend",), min_window=2
)
def beta(w: int) -> pl.Expr:
    return _slope_sum(_c, w) / _sxx(w) / _c


@_rolling(
    "RSQR{w}",
    "R-squared of the least-squares line of close on time over w bars (trend linearity).",
    tags=("trend",),
    min_window=3,
    sources=("BETA{w}", "STD{w}"),
)
def rsqr(beta_: pl.Expr, std_: pl.Expr, w: int) -> pl.Expr:
    # R^2 = slope^2 * Sxx / Syy with Syy = (w - 1) * std^2; both carry 1/close, which cancels
    return beta_**2 * _sxx(w) / ((w - 1) * std_**2)


@_rolling(
    "RESI{w}",
    "Residual of today's close from the least-squares line over w bars / close.",
    tags=("trend",),
    min_window=2,
    sources=("MA{w}", "BETA{w}"),
)
def resi(ma_: pl.Expr, beta_: pl.Expr, w: int) -> pl.Expr:
    # the line through the window's mean point reaches mean + slope * (w - 1) / 2 at today's bar
    return 1.0 - ma_ - beta_ * ((w - 1) / 2.0)


@_rolling("MAX{w}", "Highest high over w bars / close.", inputs=("high", "close"), tags=("volatility",))
def max_(w: int) -> pl.Expr:
    return _full(_h, w, "max") / _c


@_rolling("MIN{w}", "Lowest low over w bars / close.", inputs=("low", "close"), tags=("volatility",))
def min_(w: int) -> pl.Expr:
    return _full(_l, w, "min") / _c


@_rolling("QTLU{w}", "80% quantile (linear interpolation) of close over w bars / close.", tags=("volatility",))
def qtlu(w: int) -> pl.Expr:
    return _c.rolling_quantile(0.8, "linear", window_size=w, min_samples=w) / _c


@_rolling("QTLD{w}", "20% quantile (linear interpolation) of close over w bars / close.", tags=("volatility",))
def qtld(w: int) -> pl.Expr:
    return _c.rolling_quantile(0.2, "linear", window_size=w, min_samples=w) / _c


@_rolling(
    "RANK{w}", "Percentile of today's close among the last w closes: average rank / w, in (0, 1].", tags=("momentum",)
)
def rank(w: int) -> pl.Expr:
    # average rank / w: ties share the mean of their ranks (pandas rank(pct=True) of the last value).
    # A rolling rank, not the sum of w - 1 shifted comparisons it equals bit for bit: ~120 expression
    # nodes per feature made RANK60 alone cost 3 ms of a served request's 63 bars.
    return _c.rolling_rank(w, "average", min_samples=w) / w


@_rolling(
    "RSV{w}",
    "Close's position in the w-bar range: (close - min low) / (max high - min low + 1e-12).",
    inputs=("close",),
    tags=("momentum",),
    sources=("MAX{w}", "MIN{w}"),
)
def rsv(max_ratio: pl.Expr, min_ratio: pl.Expr, w: int) -> pl.Expr:
    low = min_ratio * _c  # MAX and MIN are the w-bar high / low divided by close: undo it
    return (_c - low) / (max_ratio * _c - low + EPS)


_LOW_BITS = 1 << 32  # row numbers live in the low 32 bits of an extremum key


def _extremum_key(x: pl.Expr, largest: bool) -> pl.Expr:
    """Per symbol: dense rank of x (descending for minima) * 2^32 + (2^32 - 1 - row), as Int64.

    The largest key in a window is the window's extreme value, the OLDEST row winning ties
    (numpy/Qlib argmax semantics), and its low 32 bits give that row back. The rank uses the
    symbol's whole history, but a monotone relabelling cannot change which bar of a window is
    extreme, so positions at t depend on bars <= t only (the causality harness checks it exactly).
    """
    rank = x.rank("dense", descending=not largest).cast(pl.Int64)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return (rank * _LOW_BITS + (_LOW_BITS - 1 - row)).over("symbol")


REGISTRY.derive("_high_key", _extremum_key(pl.col("high"), largest=True))
REGISTRY.derive("_low_key", _extremum_key(pl.col("low"), largest=False))


def _extreme_position(key: str, w: int) -> pl.Expr:
    """1-based position of the window's first extreme, counted from its oldest bar (Qlib IdxMax + 1)."""
    best = pl.col(key).rolling_max(w, min_samples=w)
    return (_LOW_BITS - 1 - (best % _LOW_BITS)) - _row() + w


@_rolling(
    "IMAX{w}",
    "Position of the w-bar high counted from the window's oldest bar, / w (Qlib IdxMax).",
    inputs=("high",),
    tags=("momentum",),
    derived=("_high_key",),
)
def imax(w: int) -> pl.Expr:
    return _extreme_position("_high_key", w) / w


@_rolling(
    "IMIN{w}",
    "Position of the w-bar low counted from the window's oldest bar, / w (Qlib IdxMin).",
    inputs=("low",),
    tags=("momentum",),
    derived=("_low_key",),
)
def imin(w: int) -> pl.Expr:
    return _extreme_position("_low_key", w) / w


@_rolling(
    "IMXD{w}",
    "IMAX - IMIN: positive when the low came before the high.",
    inputs=("high", "low"),
    tags=("momentum",),
    sources=("IMAX{w}", "IMIN{w}"),
)
def imxd(imax_: pl.Expr, imin_: pl.Expr, w: int) -> pl.Expr:
    return imax_ - imin_


# --- price/volume co-movement, up/down counts and sums ---------------------------------------

# Inputs shared by every window (and referenced several times inside rolling_corr / WVMA) are
# computed once per build as helper columns instead of once per reference per window.
REGISTRY.derive("_log_volume1", (_v + 1.0).log())
REGISTRY.derive("_close_ratio", (_c / _c.shift(1)).over("symbol"))
REGISTRY.derive("_log_volume_ratio1", (_v / _v.shift(1) + 1.0).log().over("symbol"))
REGISTRY.derive("_abs_return_volume", ((_c / _c.shift(1) - 1.0).abs() * _v).over("symbol"))


@_rolling(
    "CORR{w}",
    "Correlation of close with log(volume + 1) over w bars.",
    inputs=("close", "volume"),
    tags=("volume",),
    min_window=2,
    derived=("_log_volume1",),
)
def corr(w: int) -> pl.Expr:
    return pl.rolling_corr(_c, pl.col("_log_volume1"), window_size=w, min_samples=w)


@_rolling(
    "CORD{w}",
    "Correlation of close/close[-1] with log(volume/volume[-1] + 1) over w bars.",
    inputs=("close", "volume"),
    tags=("volume",),
    min_window=2,
    derived=("_close_ratio", "_log_volume_ratio1"),
)
def cord(w: int) -> pl.Expr:
    return pl.rolling_corr(pl.col("_close_ratio"), pl.col("_log_volume_ratio1"), window_size=w, min_samples=w)


@_rolling("CNTP{w}", "Share of the last w bars that closed up.", tags=("momentum",))
def cntp(w: int) -> pl.Expr:
    return _full((_c > _c.shift(1)).cast(pl.Float64), w, "mean")


@_rolling("CNTN{w}", "Share of the last w bars that closed down.", tags=("momentum",))
def cntn(w: int) -> pl.Expr:
    return _full((_c < _c.shift(1)).cast(pl.Float64), w, "mean")


@_rolling(
    "CNTD{w}", "CNTP - CNTN: up share minus down share over w bars.", tags=("momentum",), sources=("CNTP{w}", "CNTN{w}")
)
def cntd(up: pl.Expr, down: pl.Expr, w: int) -> pl.Expr:
    return up - down


def _gain_share(x: pl.Expr, w: int, sign: float) -> pl.Expr:
    """(sum of gains, or of losses) / (sum |changes| + 1e-12) over w bars, one rolling sum.

    Gains and losses over the window are (total +/- net) / 2 with total = sum |changes| and
    net = x - x[w], so the share (total + s net) / 2 / (total + eps) is rewritten as
    0.5 + 0.5 (s net - eps) / (total + eps): the same number, with `total` referenced once
    (polars evaluates every reference of an expression separately).
    """
    total = _full(x.diff().abs(), w, "sum")
    return 0.5 + 0.5 * (sign * (x - x.shift(w)) - EPS) / (total + EPS)


@_rolling(
    "SUMP{w}", "Sum of close gains / sum of absolute close changes over w bars (RSI-like, 0-1).", tags=("momentum",)
)
def sump(w: int) -> pl.Expr:
    return _gain_share(_c, w, 1.0)


@_rolling("SUMN{w}", "Sum of close losses / sum of absolute close changes over w bars.", tags=("momentum",))
def sumn(w: int) -> pl.Expr:
    return _gain_share(_c, w, -1.0)


@_rolling(
    "SUMD{w}",
    "(gains - losses) / sum of absolute close changes over w bars: SUMP - SUMN.",
    tags=("momentum",),
    sources=("SUMP{w}", "SUMN{w}"),
)
def sumd(gains: pl.Expr, losses: pl.Expr, w: int) -> pl.Expr:
    return gains - losses


@_rolling("VMA{w}", "Mean volume over w bars / (volume + 1e-12).", inputs=("volume",), tags=("volume",))
def vma(w: int) -> pl.Expr:
    return _full(_v, w, "mean") / (_v + EPS)


@_rolling(
    "VSTD{w}",
    "Standard deviation of volume over w bars / (volume + 1e-12).",
    inputs=("volume",),
    tags=("volume",),
    min_window=2,
)
def vstd(w: int) -> pl.Expr:
    return _full(_v, w, "std") / (_v + EPS)


@_rolling(
    "WVMA{w}",
    "Volume-weighted |return| dispersion: std / mean of |close/close[-1] - 1| * volume over w bars.",
    inputs=("close", "volume"),
    tags=("volume", "volatility"),
    min_window=2,
    derived=("_abs_return_volume",),
)
def wvma(w: int) -> pl.Expr:
    weighted = pl.col("_abs_return_volume")  # |close/close[-1] - 1| * volume
    return _full(weighted, w, "std") / (_full(weighted, w, "mean") + EPS)


@_rolling(
    "VSUMP{w}",
    "Sum of volume increases / sum of absolute volume changes over w bars.",
    inputs=("volume",),
    tags=("volume",),
)
def vsump(w: int) -> pl.Expr:
    return _gain_share(_v, w, 1.0)


@_rolling(
    "VSUMN{w}",
    "Sum of volume decreases / sum of absolute volume changes over w bars.",
    inputs=("volume",),
    tags=("volume",),
)
def vsumn(w: int) -> pl.Expr:
    return _gain_share(_v, w, -1.0)


@_rolling(
    "VSUMD{w}",
    "(volume increases - decreases) / sum of absolute volume changes over w bars: VSUMP - VSUMN.",
    inputs=("volume",),
    tags=("volume",),
    sources=("VSUMP{w}", "VSUMN{w}"),
)
def vsumd(gains: pl.Expr, losses: pl.Expr, w: int) -> pl.Expr:
    return gains - losses
