"""Compiled rolling kernels: the one implementation of every rolling operator the features use.

The whole-panel build and a single served window call the same functions (DESIGN.md §9).

Calling convention (every kernel):
- `x` (and `y`): one float64 column of a panel sorted by (symbol, ts); missing values are NaN
  (polars nulls become NaN on the way in, and the engine turns non-finite results back into null).
- `offsets`: int64, length symbols + 1; symbol s owns rows offsets[s]:offsets[s + 1]. Nothing crosses
  a symbol boundary: windows start at each symbol's own first row.
- The result is a new float64 array of the same length.
- Windows are trailing and full: the value at row t uses rows t - w + 1 .. t of the same symbol and
  is NaN while fewer than w rows exist (polars `min_samples = window`) or when any of them is
  missing or infinite.

Each kernel runs its symbols one after another and releases the GIL, so callers parallelise by
running groups of symbols on threads (features/panel.py does, for big panels); there is one
compiled version of each kernel, for a whole panel and a served window alike. numba is imported on
the first call, so commands that compute no features never load it; machine code is cached on
disk (cache=True) and compiled once per machine. `warm_up()` compiles (or loads) every kernel ahead
of time, e.g. before a server reports ready.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


@functools.cache
def _jit() -> ModuleType:
    from quant_cli.features import _compiled  # noqa: PLC0415 - numba only when a kernel runs

    return _compiled


def _run(name: str, x: np.ndarray, *args: object) -> Any:
    return getattr(_jit(), name)(x, *args)


def _moment(x: np.ndarray, offsets: np.ndarray, w: int, op: str, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return _run("moment", x, offsets, w, getattr(_jit(), op), ddof)


def shift(x: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """x[t - n] within the symbol (n >= 0); NaN for a symbol's first n rows."""
    return _jit().shift(x, offsets, n)


def diff(x: np.ndarray, offsets: np.ndarray, n: int = 1) -> np.ndarray:
    """x[t] - x[t - n] within the symbol; NaN for a symbol's first n rows."""
    return x - shift(x, offsets, n)


def rolling_sum(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Sum of the last w values. An all-equal window gives x * w exactly (an all-zero one 0.0)."""
    return _moment(x, offsets, w, "SUM")[0]


def rolling_mean(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Mean of the last w values (an all-equal window gives the value itself)."""
    return _moment(x, offsets, w, "MEAN")[0]


def rolling_var(x: np.ndarray, offsets: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
    """Variance of the last w values with `ddof`; exactly 0 on an all-equal window."""
    return _moment(x, offsets, w, "VAR", ddof=ddof)[0]


def rolling_std(x: np.ndarray, offsets: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
    """Standard deviation of the last w values with `ddof` (1: sample; 0: population); 0 when flat."""
    return _moment(x, offsets, w, "STD", ddof=ddof)[0]


def rolling_mean_std(x: np.ndarray, offsets: np.ndarray, w: int, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(rolling_mean, rolling_std) from one pass."""
    std, mean = _moment(x, offsets, w, "STD", ddof=ddof)
    return mean, std


def rolling_extreme(x: np.ndarray, offsets: np.ndarray, w: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rolling_max, rolling_argmax) if `largest`, else (rolling_min, rolling_argmin), from one pass."""
    return _run("extreme", x, offsets, w, largest)


def rolling_order(x: np.ndarray, offsets: np.ndarray, w: int, qs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(quantiles, rank) from one sorted window: quantiles[r] is rolling_quantile at qs[r] (an array
    of shape (len(qs), rows)), rank is rolling_rank."""
    return _run("order", x, offsets, w, np.asarray(qs, dtype=np.float64).reshape(-1))


def rolling_skew(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Bias-corrected sample skewness (pandas / polars bias=False) of the last w values; NaN when flat."""
    return _moment(x, offsets, w, "SKEW")[0]


def rolling_kurt(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Bias-corrected sample excess kurtosis (pandas / polars fisher=True, bias=False); NaN when flat."""
    return _moment(x, offsets, w, "KURT")[0]


def rolling_max(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Largest of the last w values."""
    return rolling_extreme(x, offsets, w, largest=True)[0]


def rolling_min(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Smallest of the last w values."""
    return rolling_extreme(x, offsets, w, largest=False)[0]


def rolling_argmax(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """1-based position of the window's largest value counted from its OLDEST row (1 .. w); on ties
    the oldest wins (numpy argmax + 1, Qlib IdxMax + 1)."""
    return rolling_extreme(x, offsets, w, largest=True)[1]


def rolling_argmin(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """1-based position of the window's smallest value counted from its oldest row; oldest wins ties."""
    return rolling_extreme(x, offsets, w, largest=False)[1]


def rolling_quantile(x: np.ndarray, offsets: np.ndarray, w: int, q: float) -> np.ndarray:
    """The q-quantile of the last w values, linear interpolation between order statistics
    (sorted v: v[floor(p)] + (p - floor(p)) (v[floor(p) + 1] - v[floor(p)]) with p = q (w - 1))."""
    return rolling_order(x, offsets, w, (q,))[0][0]


def rolling_rank(x: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Average rank (1 .. w) of the newest value among the last w: ties share the mean of their ranks."""
    return rolling_order(x, offsets, w, ())[1]


def rolling_weighted_sum(x: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_j weights[j] x[t - w + 1 + j] (weights[0] for the oldest row), w = len(weights)."""
    return _run("weighted_sum", x, offsets, np.ascontiguousarray(weights, dtype=np.float64))


def rolling_corr(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, w: int) -> np.ndarray:
    """Pearson correlation of x and y over the last w rows (a row missing either is missing);
    NaN when either is flat over the window (0/0)."""
    return _run("pair_stat", x, y, offsets, w, _jit().CORR, 1)


def rolling_cov(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
    """Covariance of x and y over the last w rows with `ddof`; exactly 0 when either is flat."""
    return _run("pair_stat", x, y, offsets, w, _jit().COV, ddof)


def seeded_ewm(
    x: np.ndarray, offsets: np.ndarray, alpha: float, seed_row: int, seed_len: int, seed_div: float
) -> np.ndarray:
    """Recursive smoothing seeded by a window sum (TA-Lib's EMA, Wilder's RSI/ATR/ADX).

    At row `seed_row` of each symbol (0 = its first row) y = sum of the last `seed_len` values /
    `seed_div`; afterwards y[t] = (1 - alpha) y[t-1] + alpha x[t]; rows before the seed are NaN.
    A missing x (NaN) after the seed is skipped: NaN at that row, state kept (polars
    ewm_mean(adjust=False, ignore_nulls=True) over nulls). An infinite x poisons every later row.
    A missing value in the seed window leaves the seed missing; the recursion then starts at the
    next present x.
    """
    return _run("ewm", x, offsets, float(alpha), int(seed_row), int(seed_len), float(seed_div))


def ewm_adjusted(x: np.ndarray, offsets: np.ndarray, alpha: float, span: int) -> np.ndarray:
    """Qlib's EMA: pandas ewm(alpha, adjust=True).mean() from each symbol's first row, i.e. the weighted
    mean of every value so far with weights (1 - alpha)^age (age in bars: a missing value still ages the
    older ones). NaN at a missing x, and for a symbol's first span - 1 rows (full windows, as every
    rolling kernel); an infinite x poisons every later row. Recursive: it converges, so a served
    window's lookback is measured (pipeline/lookback.py)."""
    return _run("ewm_adjusted", x, offsets, float(alpha), int(span) - 1)


def ema_mean_seeded(x: np.ndarray, offsets: np.ndarray, n: int, alpha: float, start: int = 0) -> np.ndarray:
    """Smoothing seeded with the mean of the first n values from row `start` (leading NaN rows of x)."""
    return seeded_ewm(x, offsets, alpha, start + n - 1, n, n)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel."""
    x = np.linspace(1.0, 2.0, 8)
    offsets = np.array([0, 8], dtype=np.int64)
    rolling_sum(x, offsets, 3)
    rolling_extreme(x, offsets, 3, True)
    rolling_order(x, offsets, 3, (0.5,))
    rolling_weighted_sum(x, offsets, np.ones(3))
    rolling_corr(x, x, offsets, 3)
    seeded_ewm(x, offsets, 0.5, 2, 3, 3.0)
    ewm_adjusted(x, offsets, 0.5, 3)
    shift(x, offsets, 1)
