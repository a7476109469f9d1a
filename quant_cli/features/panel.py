"""The arrays a kernel family computes on: a (symbol, ts)-sorted frame as float64 columns + offsets.

A kernel family (registered with `kernel=True`) is a function `fn(p: Panel, *sources, **params)`
returning one float64 array (NaN = missing) aligned with the panel's rows. It reads input columns
with `p.col(name)` and calls the rolling kernels through the short methods below, which bind the
panel's symbol offsets, so a family reads like the formula it implements:

    def ma(p, w):  return p.mean(p.col("close"), w) / p.col("close")

Work shared by several features (a helper series, a rolling statistic used by two families) goes
through `p.memo(key, fn)`, computed once per panel. Elementwise arithmetic is plain numpy; where
polars gives null for a comparison with a missing value, use `gt` / `lt` (NaN in, NaN out).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from quant_cli.features import kernels as k


class Panel:
    def __init__(self, frame: pl.DataFrame) -> None:
        """`frame` sorted by (symbol, ts)."""
        self.frame = frame
        sizes = frame.select(pl.col("symbol").rle().struct.field("len")).to_series().to_numpy() if frame.height else []
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._memo: dict[Hashable, np.ndarray] = {}
        self._passes: dict[Hashable, tuple[np.ndarray, Any]] = {}

    @property
    def rows(self) -> int:
        return self.frame.height

    def col(self, name: str) -> np.ndarray:
        """Column `name` as float64; null and NaN both read as NaN (missing)."""
        return self.memo(("col", name), lambda: _as_float(self.frame.get_column(name)))

    def memo(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def position(self) -> np.ndarray:
        """Row number within its symbol (0 at the symbol's first bar)."""

        def make() -> np.ndarray:
            starts = np.repeat(self.offsets[:-1], np.diff(self.offsets))
            return (np.arange(self.rows) - starts).astype(np.float64)

        return self.memo("position", make)

    # --- the kernels, bound to this panel's offsets -----------------------------------------

    def shift(self, x: np.ndarray, n: int) -> np.ndarray:
        return k.shift(x, self.offsets, n)

    def diff(self, x: np.ndarray, n: int = 1) -> np.ndarray:
        return k.diff(x, self.offsets, n)

    def sum(self, x: np.ndarray, w: int) -> np.ndarray:
        return self._shared("sum", x, w, make=lambda: k.rolling_sum(x, self.offsets, w))

    def mean(self, x: np.ndarray, w: int) -> np.ndarray:
        return self.mean_std(x, w)[0]

    def std(self, x: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
        return self.mean_std(x, w, ddof)[1]

    def mean_std(self, x: np.ndarray, w: int, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std with ddof) of the last w values, one pass shared by every caller on this panel."""
        return self._shared("mean_std", x, w, ddof, make=lambda: k.rolling_mean_std(x, self.offsets, w, ddof))

    def var(self, x: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
        return k.rolling_var(x, self.offsets, w, ddof)

    def max(self, x: np.ndarray, w: int) -> np.ndarray:
        return self._extreme(x, w, True)[0]

    def min(self, x: np.ndarray, w: int) -> np.ndarray:
        return self._extreme(x, w, False)[0]

    def argmax(self, x: np.ndarray, w: int) -> np.ndarray:
        return self._extreme(x, w, True)[1]

    def argmin(self, x: np.ndarray, w: int) -> np.ndarray:
        return self._extreme(x, w, False)[1]

    def _extreme(self, x: np.ndarray, w: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
        return self._shared("extreme", x, w, largest, make=lambda: k.rolling_extreme(x, self.offsets, w, largest))

    def order(self, x: np.ndarray, w: int, qs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(quantiles at qs, average rank) from one sorted window (kernels.rolling_order), shared."""
        return self._shared("order", x, w, tuple(qs), make=lambda: k.rolling_order(x, self.offsets, w, qs))

    def quantile(self, x: np.ndarray, w: int, q: float) -> np.ndarray:
        return self.order(x, w, (q,))[0][0]

    def rank(self, x: np.ndarray, w: int) -> np.ndarray:
        return self.order(x, w, ())[1]

    def weighted_sum(self, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return k.rolling_weighted_sum(x, self.offsets, weights)

    def skew(self, x: np.ndarray, w: int) -> np.ndarray:
        return k.rolling_skew(x, self.offsets, w)

    def kurt(self, x: np.ndarray, w: int) -> np.ndarray:
        return k.rolling_kurt(x, self.offsets, w)

    def release_passes(self) -> None:
        """Forget the shared passes (kept helper series stay): the engine calls it between windows."""
        self._passes.clear()

    def _shared(self, op: str, x: np.ndarray, *args: Hashable, make: Callable[[], Any]) -> Any:
        """One kernel pass per (operator, input array, parameters) on this panel: MA and STD, MAX and
        IMAX, QTLU, QTLD and RANK read the same pass. Keyed by the array's identity (kept alive)."""
        key = (op, id(x), *args)
        hit = self._passes.get(key)
        if hit is None or hit[0] is not x:
            hit = self._passes[key] = (x, make())
        return hit[1]

    def corr(self, x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
        return k.rolling_corr(x, y, self.offsets, w)

    def cov(self, x: np.ndarray, y: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
        return k.rolling_cov(x, y, self.offsets, w, ddof)

    def seeded_ewm(self, x: np.ndarray, n: int, alpha: float, start: int = 0) -> np.ndarray:
        """Smoothing seeded with the mean of n values from row `start` (see kernels.seeded_ewm)."""
        return k.ema_mean_seeded(x, self.offsets, n, alpha, start)


def _as_float(series: pl.Series) -> np.ndarray:
    values = series.cast(pl.Float64).to_numpy()  # nulls become NaN
    return np.array(values, dtype=np.float64, copy=True) if not values.flags.writeable else values


def gt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1.0 where a > b, 0.0 where not, NaN where either is missing (polars: null)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a) | np.isnan(b), np.nan, (a > b).astype(np.float64))


def lt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return gt(b, a)


def errstate() -> np.errstate:
    """Division by zero and log(0) give inf / NaN (then null), as in polars: no warnings."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


PARALLEL_MIN_ROWS = 50_000  # below this (a served window) threads cost more than they save


def kernel_columns(frame: pl.DataFrame, features: Sequence[Any], workers: int | None = None) -> pl.DataFrame:
    """Kernel features (registry.Feature) of a (symbol, ts)-sorted frame, in order (sources before
    what reads them); missing values (NaN) become null as a polars expression's would. Infinities
    stay (stage 2 reads them as before; the engine's output step nulls them).

    A big frame is cut into one group of whole symbols per CPU, each computed on its own thread
    (the kernels release the GIL); the groups' columns are stacked back in row order. A symbol's
    values never depend on another symbol, so the cut changes nothing (tests check it bit for bit).
    """
    workers = workers or _cpus()
    groups = _symbol_groups(frame, workers) if frame.height >= PARALLEL_MIN_ROWS else [(0, frame.height)]
    if len(groups) == 1:
        return _columns(frame, features)
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="qfactory-kernels") as pool:
        parts = list(pool.map(lambda g: _columns(frame.slice(g[0], g[1] - g[0]), features), groups))
    return pl.concat(parts, how="vertical")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _symbol_groups(frame: pl.DataFrame, workers: int) -> list[tuple[int, int]]:
    """Up to `workers` contiguous row ranges of about equal size, cut at symbol boundaries."""
    offsets = Panel(frame.select("symbol")).offsets
    cuts = {int(offsets[np.searchsorted(offsets, frame.height * k / workers)]) for k in range(1, workers)}
    bounds = sorted({0, frame.height, *(c for c in cuts if 0 < c < frame.height)})
    return list(zip(bounds[:-1], bounds[1:]))


def _columns(frame: pl.DataFrame, features: Sequence[Any]) -> pl.DataFrame:
    """The features of one group of whole symbols, computed window by window so that the shared
    passes of one window are released before the next (a composite reads sources of its own window)."""
    panel = Panel(frame)
    sources = {s.name for f in features for s in f.sources}
    arrays: dict[str, np.ndarray] = {}
    columns: list[Any] = [None] * len(features)
    window: int | None = None
    with errstate():
        for i in sorted(range(len(features)), key=lambda i: features[i].window or 0):  # stable: sources stay first
            feature = features[i]
            if feature.window != window:
                panel.release_passes()
                window = feature.window
            values = np.asarray(feature.compute(panel, [arrays[s.name] for s in feature.sources]), dtype=np.float64)
            if feature.name in sources:
                arrays[feature.name] = values
            columns[i] = values
    return _frame([f.name for f in features], columns)


def _frame(names: list[str], columns: list[np.ndarray]) -> pl.DataFrame:
    """The columns as a frame, NaN → null. A served window's few rows go in as one matrix (one call
    instead of a Series per feature); a panel's columns go in zero-copy, one by one."""
    if not columns:
        return pl.DataFrame()
    if len(columns[0]) <= _SMALL:
        frame = pl.from_numpy(np.column_stack(columns), schema=names, orient="row")
    else:
        frame = pl.DataFrame([pl.Series(name, values) for name, values in zip(names, columns)])  # zero-copy
    return frame.fill_nan(None)


_SMALL = 4096
