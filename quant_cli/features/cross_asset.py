"""The "cross_asset" set: features relating a symbol to a benchmark and to the cross-section.

Benchmark families (need `features.benchmark`, a symbol of the dataset): the benchmark's close is
aligned to each symbol's bars by features/align.py — forward fill only, at most
`features.max_staleness` old, never back-filled — and the family then runs per symbol on the
compiled kernels like any stage-1 family. Without `features.benchmark` they are skipped with a notice.

Cross-sectional families (stage 2) compare a symbol with every other symbol at the same
timestamp: market-relative returns (minus the equal-weighted mean of all symbols), sector-relative
returns (when the data has a `sector` column; skipped otherwise), and, for any per-symbol feature
listed in `features.cross_sectional` (or named directly, e.g. ``cs_rank_ret_20``), its
cross-sectional rank and z-score. They use same-timestamp values only, so they are causal; the
universe is the symbols being built (`data.symbols`, or the whole dataset).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quant_cli.features.align import BENCHMARK_CLOSE
from quant_cli.features.panel import Panel
from quant_cli.features.registry import REGISTRY, register

REGISTRY.define_set(
    "cross_asset",
    "Benchmark correlation/beta/relative strength, market- and "
    "sector-relative returns, cross-sectional ranks and z-scores.",
)

_SETS = ("cross_asset",)


def _returns(p: Panel, column: str) -> np.ndarray:
    return p.memo(("log_return_of", column), lambda: p.diff(np.log(p.col(column))))


@register(
    "bench_corr_{w}",
    inputs=("close", BENCHMARK_CLOSE),
    tags=("cross_asset",),
    sets=_SETS,
    min_window=3,
    kernel=True,
    description="Correlation of the symbol's one-bar log returns with the benchmark's over w bars.",
)
def bench_corr(p: Panel, w: int) -> np.ndarray:
    return p.corr(_returns(p, "close"), _returns(p, BENCHMARK_CLOSE), w)


@register(
    "bench_beta_{w}",
    inputs=("close", BENCHMARK_CLOSE),
    tags=("cross_asset",),
    sets=_SETS,
    min_window=3,
    kernel=True,
    description="Beta to the benchmark over w bars: cov(r, r_bench) / var(r_bench) of one-bar log returns.",
)
def bench_beta(p: Panel, w: int) -> np.ndarray:
    bench = _returns(p, BENCHMARK_CLOSE)
    return p.cov(_returns(p, "close"), bench, w) / p.var(bench, w)


@register(
    "rel_strength_{w}",
    inputs=("close", BENCHMARK_CLOSE),
    tags=("cross_asset", "momentum"),
    sets=_SETS,
    kernel=True,
    description="Relative strength vs the benchmark: w-bar log return of the symbol minus that of the benchmark.",
)
def rel_strength(p: Panel, w: int) -> np.ndarray:
    c, b = p.col("close"), p.col(BENCHMARK_CLOSE)
    return np.log(c / p.shift(c, w)) - np.log(b / p.shift(b, w))


@register(
    "mkt_rel_ret_{w}",
    inputs=("close",),
    tags=("cross_asset", "momentum"),
    sets=_SETS,
    over="ts",
    sources=("ret_{w}",),
    description="Market-relative return: ret_w minus the equal-weighted mean ret_w of "
    "all symbols at the same timestamp.",
)
def mkt_rel_ret(ret: pl.Expr, w: int) -> pl.Expr:
    return ret - ret.mean()


@register(
    "sector_rel_ret_{w}",
    inputs=("close", "sector"),
    tags=("cross_asset", "momentum"),
    sets=_SETS,
    over=("ts", "sector"),
    sources=("ret_{w}",),
    description="Sector-relative return: ret_w minus the mean ret_w of the symbol's "
    "sector (data column `sector`) at the same timestamp.",
)
def sector_rel_ret(ret: pl.Expr, w: int) -> pl.Expr:
    return ret - ret.mean()


@register(
    "cs_rank_{feature}",
    inputs=(),
    tags=("cross_asset",),
    sets=_SETS,
    over="ts",
    sources=("{feature}",),
    description="Cross-sectional percentile of a feature at each timestamp: (average "
    "rank - 0.5) / count of symbols with a value, in (0, 1); see "
    "features.cross_sectional.",
)
def cs_rank(x: pl.Expr) -> pl.Expr:
    x = x.fill_nan(None)  # polars ranks NaN above every number; a missing value is not ranked or counted
    return (x.rank("average") - 0.5) / x.count()


@register(
    "cs_z_{feature}",
    inputs=(),
    tags=("cross_asset",),
    sets=_SETS,
    over="ts",
    sources=("{feature}",),
    description="Cross-sectional z-score of a feature at each timestamp: (x - mean) / "
    "std (ddof=1) over symbols; see features.cross_sectional.",
)
def cs_z(x: pl.Expr) -> pl.Expr:
    x = x.fill_nan(None)  # one NaN would otherwise make every symbol's mean and std NaN
    return (x - x.mean()) / x.std()
