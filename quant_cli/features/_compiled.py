"""The numba-compiled bodies behind quant_cli.features.kernels (import that module, not this one).

Kept apart so that importing the feature registry does not import numba: this module is imported
on the first kernel call (kernels._jit). Every function is compiled with cache=True, so the
machine code is written next to this file (or to NUMBA_CACHE_DIR) once and loaded afterwards.

Layout every kernel shares: `x` is one float64 column of a panel sorted by (symbol, ts), and
`offsets` (int64, length symbols + 1) delimits each symbol's rows: symbol s is
x[offsets[s]:offsets[s + 1]]. A `*_one` function handles one symbol's segment [lo, hi) and
writes into `out`; the driver (the public name) runs the symbols one after another. Every
function releases the GIL (nogil=True): the engine runs groups of symbols on threads
(features/panel.py). Missing values are NaN; a window that
holds a missing (or infinite) value gives NaN, like polars' min_samples = window.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# op codes of moment_*
SUM, MEAN, VAR, STD, SKEW, KURT = range(6)
# op codes of pair_stat
CORR, COV = range(2)


@njit(cache=True, nogil=True, inline="always")
def _bad(v: float) -> bool:
    return not math.isfinite(v)


@njit(cache=True, nogil=True)
def _moments(x, lo, hi, anchor):  # noqa: ANN001, ANN202 - numba
    """Sums of d and d^2 with d = x - anchor over x[lo:hi]; how many values are non-finite."""
    s1 = s2 = 0.0
    bad = 0
    for j in range(lo, hi):
        v = x[j]
        if _bad(v):
            bad += 1
            continue
        d = v - anchor
        s1 += d
        s2 += d * d
    return s1, s2, bad


@njit(cache=True, nogil=True)
def _spread(s1, s2, n, op, ddof):  # noqa: ANN001, ANN202 - numba
    """VAR/STD of a window from its anchored power sums."""
    if n - ddof <= 0:
        return np.nan
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0) * n / (n - ddof)
    return math.sqrt(var) if op == STD else var


@njit(cache=True, nogil=True)
def _shape(x, lo, hi, op):  # noqa: ANN001, ANN202 - numba
    """SKEW/KURT of x[lo:hi] from central moments computed in two passes: higher moments from
    running power sums lose ~1e-8 relative on short windows, so these are evaluated per window."""
    n = float(hi - lo)
    mean = 0.0
    for j in range(lo, hi):
        mean += x[j]
    mean /= n
    m2 = m3 = m4 = 0.0
    for j in range(lo, hi):
        d = x[j] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    m2 /= n
    m3 /= n
    m4 /= n
    if op == SKEW:  # bias-corrected sample skewness (pandas / polars bias=False)
        return math.sqrt(n * (n - 1.0)) / (n - 2.0) * m3 / m2**1.5
    g2 = m4 / (m2 * m2) - 3.0  # bias-corrected excess kurtosis
    return ((n + 1.0) * g2 + 6.0) * (n - 1.0) / ((n - 2.0) * (n - 3.0))


@njit(cache=True, nogil=True)
def _moment_one(x, lo, hi, w, op, ddof, out, mean_out):  # noqa: ANN001 - numba
    """SUM/MEAN/VAR/STD into `out` and the window mean into `mean_out`, from sums of (x - anchor) and
    its square, the anchor re-taken and the sums recomputed every w rows (no drift, no cancellation
    against the price level); SKEW/KURT per window. A window whose values are all equal is flat:
    variance exactly 0, mean exact."""
    equal_run = 0  # consecutive rows equal to their predecessor, ending at i
    anchor = 0.0
    s1 = s2 = 0.0
    bad = 0
    since = w  # rows since the sums were last recomputed from scratch
    for i in range(lo, hi):
        if i > lo and x[i] == x[i - 1]:
            equal_run += 1
        else:
            equal_run = 0
        start = i - w + 1
        if start < lo:
            out[i] = mean_out[i] = np.nan
            continue
        if since >= w:
            anchor = x[start] if not _bad(x[start]) else 0.0
            s1, s2, bad = _moments(x, start, i + 1, anchor)
            since = 0
        else:
            v = x[i]
            if _bad(v):
                bad += 1
            else:
                d = v - anchor
                s1 += d
                s2 += d * d
            v = x[start - 1]
            if _bad(v):
                bad -= 1
            else:
                d = v - anchor
                s1 -= d
                s2 -= d * d
        since += 1
        flat = equal_run >= w - 1
        if bad > 0:
            out[i] = mean_out[i] = np.nan
            continue
        mean_out[i] = x[i] if flat else s1 / w + anchor
        if op == SUM:
            out[i] = x[i] * w if flat else s1 + anchor * w
        elif op == MEAN:
            out[i] = mean_out[i]
        elif flat:  # no spread (0), no shape (0/0)
            out[i] = 0.0 if (op == VAR or op == STD) and w - ddof > 0 else np.nan
        elif op == VAR or op == STD:
            out[i] = _spread(s1, s2, float(w), op, ddof)
        else:
            out[i] = _shape(x, start, i + 1, op)


@njit(cache=True, nogil=True)
def moment(x, offsets, w, op, ddof):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    mean = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _moment_one(x, offsets[s], offsets[s + 1], w, op, ddof, out, mean)
    return out, mean


@njit(cache=True, nogil=True)
def _extreme_one(x, lo, hi, w, largest, value, position, buf):  # noqa: ANN001 - numba
    """The window's largest (or smallest) value and the 1-based position of its OLDEST occurrence,
    counted from the window's oldest bar, with a monotone deque of row numbers in buf[lo:hi]."""
    head = tail = lo  # deque = buf[head:tail]
    last_bad = lo - 1 - w  # the latest non-finite row
    for i in range(lo, hi):
        v = x[i]
        if _bad(v):
            last_bad = i
            head = tail = lo
        else:
            while tail > head and ((x[buf[tail - 1]] < v) if largest else (x[buf[tail - 1]] > v)):
                tail -= 1
            buf[tail] = i
            tail += 1
        start = i - w + 1
        while tail > head and buf[head] < start:
            head += 1
        if start < lo or last_bad >= start:
            value[i] = position[i] = np.nan
        else:
            value[i] = x[buf[head]]
            position[i] = buf[head] - start + 1.0


@njit(cache=True, nogil=True)
def extreme(x, offsets, w, largest):  # noqa: ANN001, ANN201 - numba
    value = np.empty_like(x)
    position = np.empty_like(x)
    buf = np.empty(len(x), dtype=np.int64)
    for s in range(len(offsets) - 1):
        _extreme_one(x, offsets[s], offsets[s + 1], w, largest, value, position, buf)
    return value, position


@njit(cache=True, nogil=True, inline="always")
def _lower_bound(buf, lo, n, v):  # noqa: ANN001, ANN202 - numba
    """First index k in [0, n) with buf[lo + k] >= v (n if none)."""
    a, b = 0, n
    while a < b:
        m = (a + b) // 2
        if buf[lo + m] < v:
            a = m + 1
        else:
            b = m
    return a


@njit(cache=True, nogil=True, inline="always")
def _remove(buf, lo, n, old):  # noqa: ANN001, ANN202 - numba
    k = _lower_bound(buf, lo, n, old)
    for j in range(lo + k, lo + n - 1):
        buf[j] = buf[j + 1]


@njit(cache=True, nogil=True)
def _order_one(x, lo, hi, w, qs, quantiles, rank, buf):  # noqa: ANN001 - numba
    """Linear-interpolation quantiles at each q of `qs` and the average rank (1..w) of the newest
    value, over a sorted copy of the window kept in buf[lo:lo + n] (insert / remove by binary search)."""
    n = 0
    bad = 0
    for i in range(lo, hi):
        v = x[i]
        start = i - w + 1
        old = x[start - 1] if start - 1 >= lo else np.nan
        leaving = start - 1 >= lo and not _bad(old)
        if _bad(v):
            bad += 1
            if leaving:
                _remove(buf, lo, n, old)
                n -= 1
        elif leaving:  # one value in, one out: shift only the values between their positions
            out_at = _lower_bound(buf, lo, n, old)
            in_at = _lower_bound(buf, lo, n, v)
            if in_at > out_at:
                for j in range(lo + out_at, lo + in_at - 1):
                    buf[j] = buf[j + 1]
                buf[lo + in_at - 1] = v
            else:
                for j in range(lo + out_at, lo + in_at, -1):
                    buf[j] = buf[j - 1]
                buf[lo + in_at] = v
        else:
            k = _lower_bound(buf, lo, n, v)
            for j in range(lo + n, lo + k, -1):
                buf[j] = buf[j - 1]
            buf[lo + k] = v
            n += 1
        if start - 1 >= lo and _bad(old):
            bad -= 1
        if start < lo or bad > 0:
            rank[i] = np.nan
            for r in range(len(qs)):
                quantiles[r, i] = np.nan
            continue
        for r in range(len(qs)):
            pos = qs[r] * (w - 1)
            below = int(math.floor(pos))
            above = min(below + 1, w - 1)
            lower = buf[lo + below]
            quantiles[r, i] = lower if pos == below else lower + (pos - below) * (buf[lo + above] - lower)
        less = _lower_bound(buf, lo, n, v)
        equal = 0
        while less + equal < n and buf[lo + less + equal] == v:
            equal += 1
        rank[i] = less + (equal + 1) / 2.0


@njit(cache=True, nogil=True)
def order(x, offsets, w, qs):  # noqa: ANN001, ANN201 - numba
    quantiles = np.empty((len(qs), len(x)))
    rank = np.empty_like(x)
    buf = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _order_one(x, offsets[s], offsets[s + 1], w, qs, quantiles, rank, buf)
    return quantiles, rank


@njit(cache=True, nogil=True)
def _pair_one(x, y, lo, hi, w, op, ddof, out):  # noqa: ANN001 - numba
    """CORR / COV of x and y over w rows: anchored co-moment sums, recomputed every w rows; a
    flat x or y gives a correlation of 0/0 (NaN) and a covariance of exactly 0."""
    run_x = run_y = 0
    ax = ay = sx = sy = sxx = syy = sxy = 0.0
    bad = 0
    since = w
    for i in range(lo, hi):
        run_x = run_x + 1 if i > lo and x[i] == x[i - 1] else 0
        run_y = run_y + 1 if i > lo and y[i] == y[i - 1] else 0
        start = i - w + 1
        if start < lo:
            out[i] = np.nan
            continue
        if since >= w:
            ax = x[start] if not _bad(x[start]) else 0.0
            ay = y[start] if not _bad(y[start]) else 0.0
            sx = sy = sxx = syy = sxy = 0.0
            bad = 0
            for j in range(start, i + 1):
                if _bad(x[j]) or _bad(y[j]):
                    bad += 1
                else:
                    dx, dy = x[j] - ax, y[j] - ay
                    sx += dx
                    sy += dy
                    sxx += dx * dx
                    syy += dy * dy
                    sxy += dx * dy
            since = 0
        else:
            for j, sign in ((i, 1.0), (start - 1, -1.0)):
                if _bad(x[j]) or _bad(y[j]):
                    bad += 1 if sign > 0 else -1
                else:
                    dx, dy = x[j] - ax, y[j] - ay
                    sx += sign * dx
                    sy += sign * dy
                    sxx += sign * dx * dx
                    syy += sign * dy * dy
                    sxy += sign * dx * dy
        since += 1
        if bad > 0 or w - ddof <= 0:
            out[i] = np.nan
            continue
        flat_x, flat_y = run_x >= w - 1, run_y >= w - 1
        cov = 0.0 if flat_x or flat_y else (sxy - sx * sy / w) / (w - ddof)
        if op == COV:
            out[i] = cov
        elif flat_x or flat_y:
            out[i] = np.nan
        else:
            var_x = max(sxx - sx * sx / w, 0.0)
            var_y = max(syy - sy * sy / w, 0.0)
            out[i] = (sxy - sx * sy / w) / math.sqrt(var_x * var_y)


@njit(cache=True, nogil=True)
def pair_stat(x, y, offsets, w, op, ddof):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _pair_one(x, y, offsets[s], offsets[s + 1], w, op, ddof, out)
    return out


@njit(cache=True, nogil=True)
def _weighted_one(x, lo, hi, weights, out):  # noqa: ANN001 - numba
    w = len(weights)
    for i in range(lo, hi):
        start = i - w + 1
        if start < lo:
            out[i] = np.nan
            continue
        total = 0.0
        for j in range(w):
            total += weights[j] * x[start + j]
        out[i] = total  # a missing value makes the total NaN


@njit(cache=True, nogil=True)
def weighted_sum(x, offsets, weights):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _weighted_one(x, offsets[s], offsets[s + 1], weights, out)
    return out


@njit(cache=True, nogil=True)
def shift(x, offsets, n):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    for s in range(len(offsets) - 1):
        lo, hi = offsets[s], offsets[s + 1]
        for i in range(lo, hi):
            out[i] = x[i - n] if i - n >= lo else np.nan
    return out


@njit(cache=True, nogil=True)
def _ewm_one(x, lo, hi, alpha, seed_row, seed_len, seed_div, out):  # noqa: ANN001 - numba
    """y[r] = sum(x[r - seed_len + 1 .. r]) / seed_div at r = seed_row (row within the symbol); then
    y[t] = (1 - alpha) y[t-1] + alpha x[t]. A missing x (NaN) is skipped (its row is NaN, the state
    kept); an infinite x poisons every later value (polars' NaN in ewm_mean). A missing value in the
    seed window leaves the seed missing and the recursion starts at the next present x."""
    y = np.nan
    started = False
    for i in range(lo, hi):
        r = i - lo
        if r < seed_row:
            out[i] = np.nan
            continue
        if r == seed_row:
            total = 0.0
            missing = r - seed_len + 1 < 0
            for j in range(max(i - seed_len + 1, lo), i + 1):
                if math.isnan(x[j]):
                    missing = True
                total += x[j]
            if not missing:
                y = total / seed_div
                started = True
                out[i] = y
            else:
                out[i] = np.nan
            continue
        v = x[i]
        if math.isnan(v):
            out[i] = np.nan
            continue
        y = (1.0 - alpha) * y + alpha * v if started else v
        started = True
        out[i] = y


@njit(cache=True, nogil=True)
def ewm(x, offsets, alpha, seed_row, seed_len, seed_div):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _ewm_one(x, offsets[s], offsets[s + 1], alpha, seed_row, seed_len, seed_div, out)
    return out


@njit(cache=True, nogil=True)
def _ewm_adjusted_one(x, lo, hi, alpha, first_row, out):  # noqa: ANN001 - numba
    """pandas ewm(alpha, adjust=True, ignore_na=False).mean(): sum_i (1 - alpha)^i x[t - i] / sum_i
    (1 - alpha)^i over the present values since the symbol's first row (weights by bar distance, so a
    missing value still decays the older ones); NaN at a missing x and for rows before `first_row`."""
    decay = 1.0 - alpha
    num = den = 0.0
    for i in range(lo, hi):
        v = x[i]
        num *= decay
        den *= decay
        if math.isnan(v):
            out[i] = np.nan
            continue
        num += v
        den += 1.0
        out[i] = num / den if i - lo >= first_row else np.nan


@njit(cache=True, nogil=True)
def ewm_adjusted(x, offsets, alpha, first_row):  # noqa: ANN001, ANN201 - numba
    out = np.empty_like(x)
    for s in range(len(offsets) - 1):
        _ewm_adjusted_one(x, offsets[s], offsets[s + 1], alpha, first_row, out)
    return out
