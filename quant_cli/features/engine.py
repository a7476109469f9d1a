"""Compute features on canonical bars: one lazy polars query, every expression per symbol.

Output contract: columns `symbol, ts, <feature...>` (features Float64, in the order given), one
row per input bar, sorted by (symbol, ts). Warm-up rows are null; so is any value that comes out
non-finite (inf from x/0, NaN from 0/0) — downstream stages see null, never inf/NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from quant_cli import console
from quant_cli.errors import DataError
from quant_cli.features.registry import REGISTRY, Feature

FeatureLike = Feature | str


def as_features(specs: Sequence[FeatureLike]) -> list[Feature]:
    """Accept Feature objects or concrete names (``ret_5``); unknown names → KeyError."""
    return [s if isinstance(s, Feature) else REGISTRY.feature(s) for s in specs]


def split_available(features: Sequence[Feature], columns: Sequence[str]) -> tuple[list[Feature], dict[str, list[str]]]:
    """(features whose inputs are present, {feature name: missing columns} for the rest)."""
    present = set(columns)
    kept: list[Feature] = []
    missing: dict[str, list[str]] = {}
    for feature in features:
        absent = [c for c in feature.inputs if c not in present]
        if absent:
            missing[feature.name] = absent
        else:
            kept.append(feature)
    return kept, missing


def skipped_message(missing: dict[str, list[str]]) -> str:
    """One line grouping skipped features by the columns they lack."""
    by_columns: dict[str, list[str]] = {}
    for name, absent in missing.items():
        by_columns.setdefault(", ".join(absent), []).append(name)
    groups = "; ".join(f"{', '.join(names)} (need {cols})" for cols, names in by_columns.items())
    return f"skipped {len(missing)} feature(s) whose input columns are missing from the data: {groups}"


def compute_features(bars: pl.DataFrame, specs: Sequence[FeatureLike]) -> pl.DataFrame:
    """Feature table for `bars`; features lacking input columns are skipped with one notice."""
    for column in ("symbol", "ts"):
        if column not in bars.columns:
            raise DataError(f"bars have no {column!r} column; features need canonical bars (symbol, ts, close, ...)")
    features, missing = split_available(as_features(specs), bars.columns)
    if missing:
        console.notice(skipped_message(missing))
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate feature names in {names}")
    return _query(bars, features).collect()


def _query(bars: pl.DataFrame, features: Sequence[Feature]) -> pl.LazyFrame:
    inputs = sorted({c for f in features for c in f.inputs})
    lazy = bars.lazy().sort("symbol", "ts", maintain_order=True)  # windows must run in time order
    lazy = lazy.with_columns(pl.col(inputs).cast(pl.Float64)) if inputs else lazy
    exprs = [f.expr().over(f.family.over).cast(pl.Float64).alias(f.name) for f in features]
    names = [f.name for f in features]
    return lazy.select("symbol", "ts", *exprs).with_columns(_finite_or_null(n) for n in names)


def _finite_or_null(name: str) -> pl.Expr:
    column = pl.col(name)
    return pl.when(column.is_finite()).then(column).otherwise(None).alias(name)
