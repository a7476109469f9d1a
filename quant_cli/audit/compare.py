"""How the audit decides that two sets of numbers are "identical", and says where they are not.

Both sides of every comparison come from the same code on the same inputs (when nothing looks
ahead), so they agree bit for bit on one machine; the tolerance only absorbs float32 rounding of a
reduction computed in another order (a threaded BLAS, a parallel aggregation). A look-ahead moves a
value by far more: the rewritten future is a different random walk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

RTOL = 1e-6
ATOL = 1e-9
KEYS = ["symbol", "ts"]


def differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: a and b differ beyond the tolerance (NaN equals NaN, NaN never equals a number)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        far = np.abs(a - b) > ATOL + RTOL * np.abs(b)
    return far | (np.isnan(a) != np.isnan(b))


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = ~(np.isnan(a) | np.isnan(b))
    return float(np.max(np.abs(a[both] - b[both]), initial=0.0))


def compare_scores(expected: pl.DataFrame, got: pl.DataFrame, value: str = "score") -> dict[str, Any]:
    """Two score frames (symbol, ts, `value`) over the same rows: rows missing on either side and
    values that differ; `first` names the earliest offending row."""
    joined = (
        expected.select(*KEYS, pl.col(value).alias("_a"))
        .join(got.select(*KEYS, pl.col(value).alias("_b")), on=KEYS, how="full", coalesce=True)
        .sort("ts", "symbol")
    )
    a, b = joined["_a"].to_numpy(), joined["_b"].to_numpy()
    missing = joined["_a"].is_null().to_numpy() | joined["_b"].is_null().to_numpy()
    bad = missing | differs(np.where(missing, 0.0, a), np.where(missing, 0.0, b))
    out: dict[str, Any] = {
        "rows": joined.height,
        "differing": int(bad.sum()),
        "max_abs_difference": max_difference(a, b),
    }
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = joined.row(i, named=True)
        out["first"] = {
            "symbol": str(row["symbol"]),
            "ts": row["ts"].isoformat(),
            "expected": _number(row["_a"]),
            "got": _number(row["_b"]),
        }
    return out


def compare_nested(expected: Any, got: Any, path: str = "") -> str | None:
    """The first path where two JSON-like values differ (numbers to the tolerance), or None."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in expected or key not in got:
                return f"{path}.{key}".lstrip(".")
            if (where := compare_nested(expected[key], got[key], f"{path}.{key}")) is not None:
                return where
        return None
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return f"{path} (length {len(expected)} vs {len(got)})".lstrip(".")
        for i, (x, y) in enumerate(zip(expected, got)):
            if (where := compare_nested(x, y, f"{path}[{i}]")) is not None:
                return where
        return None
    if _is_number(expected) and _is_number(got):
        x, y = float(expected), float(got)
        return (
            None
            if (math.isnan(x) and math.isnan(y)) or not differs(np.array([x]), np.array([y]))[0]
            else path.lstrip(".")
        )
    return None if expected == got else path.lstrip(".")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
