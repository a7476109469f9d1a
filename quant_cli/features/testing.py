"""Causality harness (DESIGN.md §3): a feature at bar t may use only bars with ts <= t.

`assert_causal(features, bars)` computes the features, then for several cut points t
  1. perturbs every bar after t (prices and volumes scaled by random factors, OHLC kept valid),
  2. truncates the panel after t (catches leaks through the *existence* of future rows, e.g. a
     normalisation by the symbol's last or total value),
recomputes, and requires every value at ts <= t to be identical (null == null, exact floats).
Any feature family plugs in by calling it; tests/test_causality.py runs it over the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from quant_cli.features.align import FeatureOptions
from quant_cli.features.engine import FeatureLike, compute_features

_PRICES = ("open", "high", "low", "close")
Compute = Callable[[pl.DataFrame], pl.DataFrame]


def cut_points(bars: pl.DataFrame, n: int = 4, seed: int = 0) -> list[Any]:
    """Timestamps to cut at: one inside the shortest warm-up, the rest spread over the history."""
    ts = bars.get_column("ts").unique().sort()
    rng = np.random.default_rng(seed)
    early = [3] if len(ts) > 4 else []
    spread = sorted(rng.integers(len(ts) // 5, len(ts) - 1, size=max(n - len(early), 1)).tolist())
    return [ts[int(i)] for i in (*early, *spread)]


def perturb_after(bars: pl.DataFrame, t: Any, seed: int = 0) -> pl.DataFrame:
    """Bars with every row after `t` changed: numeric columns scaled by factors in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    after = (bars.get_column("ts") > t).to_numpy()
    numeric = [c for c, dtype in bars.schema.items() if dtype.is_numeric()]
    scaled = {c: _scale(bars.get_column(c).to_numpy(), after, rng) for c in numeric}
    out = bars.with_columns(pl.Series(c, v).cast(bars.schema[c], strict=False) for c, v in scaled.items())
    return _repair_ohlc(out) if all(c in out.columns for c in _PRICES) else out


def _scale(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factors = np.where(mask, np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=len(values))), 1.0)
    return values * factors


def _repair_ohlc(bars: pl.DataFrame) -> pl.DataFrame:
    """Keep high >= max(open, close) and low <= min(open, close) (unchanged rows already satisfy it)."""
    return bars.with_columns(
        pl.max_horizontal("high", "open", "close").alias("high"),
        pl.min_horizontal("low", "open", "close").alias("low"),
    )


def assert_causal(
    features: Sequence[FeatureLike] | Compute,
    bars: pl.DataFrame,
    cuts: Sequence[Any] | None = None,
    seed: int = 0,
    options: FeatureOptions | None = None,
) -> None:
    """Raise AssertionError naming the feature, symbol and ts of the first value that used the future.

    `features` is a list of Feature objects / concrete names, or any callable bars → frame with
    symbol, ts and feature columns (to test a pipeline, not only registry features). `options`
    (e.g. the benchmark symbol) go to compute_features.
    """
    compute = features if callable(features) else (lambda b: compute_features(b, features, options))
    base = compute(bars)
    for i, t in enumerate(cuts if cuts is not None else cut_points(bars, seed=seed)):
        changed = perturb_after(bars, t, seed=seed + i)
        _check_changed(bars, changed, t)
        for how, variant in (("perturbed", changed), ("truncated", bars.filter(pl.col("ts") <= t))):
            _compare(base, compute(variant), t, f"bars after {t} {how}")


def _check_changed(before: pl.DataFrame, after: pl.DataFrame, t: Any) -> None:
    """The harness itself must bite: the perturbation has to change the future bars."""
    if (before.get_column("ts") > t).any() and before.equals(after):
        raise AssertionError(f"perturbation after {t} changed nothing; the harness would prove nothing")


def _compare(base: pl.DataFrame, other: pl.DataFrame, t: Any, what: str) -> None:
    names = [c for c in base.columns if c not in ("symbol", "ts")]
    left = base.filter(pl.col("ts") <= t)
    right = other.filter(pl.col("ts") <= t)
    if not left.select("symbol", "ts").equals(right.select("symbol", "ts")):
        raise AssertionError(f"rows at ts <= {t} differ after {what}: the feature frame is not one row per past bar")
    for name in names:
        same = left.get_column(name).eq_missing(right.get_column(name))
        if not same.all():
            row = left.filter(~same).row(0, named=True)
            other_value = right.filter(~same).get_column(name)[0]
            raise AssertionError(
                f"feature {name!r} is not causal: at symbol={row['symbol']} ts={row['ts']} "
                f"value {row[name]!r} became {other_value!r} when {what}"
            )
