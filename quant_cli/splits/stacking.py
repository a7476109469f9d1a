"""Purged k-fold over a panel, for out-of-fold predictions (stacking).

Folds are contiguous blocks of unique timestamps shared by all symbols. A training row is purged
when its label interval [ts, t1] overlaps the test block's span [first ts, last t1], and the
`embargo` timestamps after the block are dropped too, so no training row's label was measured
over the same bars as a test row's (López de Prado, AFML ch. 7). The algorithm itself lives in quant_cli.splits.purged.
"""

from __future__ import annotations

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.splits import embargo as embargo_rules
from quant_cli.splits import purged as cv

_MAX = np.iinfo(np.int64).max


def _as_ints(values: np.ndarray, name: str) -> np.ndarray:
    """Datetimes as int64 microseconds, numbers as int64/float64, for comparisons only."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[us]").astype(np.int64)
    if arr.dtype.kind in "iuf":
        return arr
    raise ModelError(f"{name} must hold datetimes or numbers, got dtype {arr.dtype}")


def _ts_t1(ts: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ts_i, t1_i = _as_ints(ts, "ts"), _as_ints(t1, "t1")
    if ts_i.shape != t1_i.shape or ts_i.ndim != 1:
        raise ModelError(f"ts and t1 must be 1-d and the same length, got {ts_i.shape} and {t1_i.shape}")
    if np.asarray(t1).dtype.kind == "M":
        # An unknown label end (NaT) is treated as reaching the end of time: purged whenever in doubt.
        t1_i = np.where(np.isnat(np.asarray(t1)), _MAX, t1_i)
    if (t1_i < ts_i).any():
        raise ModelError("t1 (label end time) is before ts on some rows; labels must end at or after their row")
    return ts_i, t1_i


def purged_kfold_indices(
    ts: np.ndarray, t1: np.ndarray, n_splits: int, embargo: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train_idx, test_idx)] per fold; every row is in exactly one test set.

    Validates model-side inputs, then uses the split module's purged k-fold (quant_cli.splits.purged), so
    stacking folds and `[split] method = "purged_kfold"` purge and embargo identically
    (one rule: quant_cli.splits.embargo).
    """
    ts_i, t1_i = _ts_t1(ts, t1)
    n_unique = len(np.unique(ts_i))
    if not 2 <= n_splits <= n_unique:
        raise ModelError(f"folds must be between 2 and the number of distinct timestamps ({n_unique}), got {n_splits}")
    if embargo < 0:
        raise ModelError(f"embargo must be >= 0 timestamps, got {embargo}")
    return cv.purged_kfold_indices(ts_i, t1_i, n_splits, embargo)


def label_horizon(ts: np.ndarray, t1: np.ndarray) -> int:
    """Median number of timestamps a label spans, (ts, t1]: the default embargo (quant_cli.splits.embargo)."""
    return embargo_rules.label_horizon(*_ts_t1(ts, t1))


def purged_holdout(ts: np.ndarray, t1: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, holdout_idx): the last `share` of the distinct timestamps is held out; a fit row is
    kept only when its label ends before the holdout's first timestamp, so no fit row's label
    interval [ts, t1] overlaps a holdout row (the purge of `purged_kfold_indices`, one block at the end)."""
    ts_i, t1_i = _ts_t1(ts, t1)
    unique = np.unique(ts_i)
    n_held = int(np.ceil(len(unique) * share))
    if not 0 < n_held < len(unique):
        raise ModelError(f"cannot hold out {share:g} of {len(unique)} distinct timestamps; need at least 2 timestamps")
    start = unique[len(unique) - n_held]
    return np.flatnonzero(t1_i < start), np.flatnonzero(ts_i >= start)
