"""Scalers and missing-value handling, fit on training rows only (DESIGN.md §3).

Statistics are plain JSON so runs and bundles can store and reload them exactly.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from quant_cli.errors import DataError


def fit_scaler(train: pl.DataFrame, columns: list[str], kind: str) -> dict[str, Any]:
    """Per-feature mean and std over training rows (nulls ignored); std 0 or undefined becomes 1."""
    if kind == "none":
        return {"kind": "none", "columns": columns}
    if train.height == 0:
        raise DataError("the training segment is empty after purge and embargo; use more data or a smaller embargo")
    stats = train.select(
        *[pl.col(c).mean().alias(f"{c}__mean") for c in columns],
        *[pl.col(c).std().alias(f"{c}__std") for c in columns],
    ).row(0, named=True)
    return {
        "kind": kind,
        "columns": columns,
        "mean": {c: _finite_or(stats[f"{c}__mean"], 0.0) for c in columns},
        "std": {c: _positive_or_one(stats[f"{c}__std"]) for c in columns},
    }


def _finite_or(value: float | None, fallback: float) -> float:
    return fallback if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def _positive_or_one(value: float | None) -> float:
    value = _finite_or(value, 1.0)
    return value if value > 0 else 1.0


def apply_scaler(frame: pl.DataFrame, scaler: dict[str, Any]) -> pl.DataFrame:
    if scaler["kind"] == "none":
        return frame
    return frame.with_columns(
        [((pl.col(c) - scaler["mean"][c]) / scaler["std"][c]).alias(c) for c in scaler["columns"]]
    )


def apply_fill(frame: pl.DataFrame, columns: list[str], fill: str) -> pl.DataFrame:
    """zero: after z-scoring this is the training mean; drop: remove incomplete rows; none: keep nulls.

    Never a backward fill: that would pull future values into the past.
    """
    if fill == "zero":
        return frame.with_columns(pl.col(columns).fill_null(0.0))
    if fill == "drop":
        return frame.drop_nulls(columns)
    return frame
