"""Purged k-fold and combinatorial purged cross-validation (AFML ch. 7 and 12), by label end time.

Rows are (ts, t1) pairs from any number of symbols; groups are contiguous blocks of the panel's
unique timestamps, so every symbol is cut at the same instants. For each test block [a, b]:
- purge: a non-test row whose label interval [ts, t1] overlaps [a, max t1 of the block's rows];
- embargo: a non-test row with e < ts <= embargo_end(e), where e is the block's last label end
  (as AFML's PurgedKFold) — the one rule of quant_cli.splits.embargo.
Everything else outside the test blocks trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from quant_cli.errors import DataError, RecipeError
from quant_cli.splits.embargo import EMBARGO_EXAMPLE, Embargo, embargo_end

__all__ = [
    "EMBARGO_EXAMPLE",
    "Embargo",
    "Fold",
    "cpcv",
    "embargo_end",
    "group_of",
    "purged_kfold",
    "purged_kfold_indices",
]


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # row positions
    test: np.ndarray
    test_groups: tuple[int, ...]
    purged: int
    embargoed: int


def group_positions(n_unique: int, n_groups: int) -> list[tuple[int, int]]:
    """First and last unique-timestamp position of each of `n_groups` contiguous groups."""
    if n_unique < n_groups:
        raise DataError(f"cannot cut {n_unique} timestamps into {n_groups} groups; use fewer folds/groups or more data")
    chunks = np.array_split(np.arange(n_unique), n_groups)
    return [(int(c[0]), int(c[-1])) for c in chunks]


def _split(ts: np.ndarray, t1: np.ndarray, unique: np.ndarray, blocks: list[tuple[int, int]], embargo: Embargo):
    test = np.zeros(len(ts), dtype=bool)
    purged = np.zeros(len(ts), dtype=bool)
    embargoed = np.zeros(len(ts), dtype=bool)
    for first, last in blocks:
        in_block = (ts >= unique[first]) & (ts <= unique[last])
        test |= in_block
        block_end = t1[in_block].max() if in_block.any() else unique[last]
        purged |= (ts <= block_end) & (t1 >= unique[first])
        embargoed |= (ts > block_end) & (ts <= embargo_end(unique, int(block_end), embargo))
    purged &= ~test
    embargoed &= ~test & ~purged
    train = ~(test | purged | embargoed)
    return np.flatnonzero(train), np.flatnonzero(test), int(purged.sum()), int(embargoed.sum())


def _as_us(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype("datetime64[us]").astype(np.int64)


def purged_kfold(ts: np.ndarray, t1: np.ndarray, n_splits: int, embargo: Embargo) -> list[Fold]:
    """k contiguous test blocks in time order; each trains on the purged, embargoed rest."""
    return cpcv(ts, t1, n_splits, 1, embargo)[0]


def cpcv(ts: np.ndarray, t1: np.ndarray, n_groups: int, k: int, embargo: Embargo) -> tuple[list[Fold], list[list[int]]]:
    """All C(N, k) splits, and the C(N-1, k-1) backtest paths as split indices per group."""
    if not 1 <= k < n_groups:
        raise RecipeError(f"split.test_groups must be between 1 and split.groups - 1 ({n_groups - 1}), got {k}")
    ts_us, t1_us = _as_us(ts), _as_us(t1)
    unique = np.unique(ts_us)
    groups = group_positions(len(unique), n_groups)
    folds = []
    for index, chosen in enumerate(combinations(range(n_groups), k)):
        train, test, purged, embargoed = _split(ts_us, t1_us, unique, [groups[g] for g in chosen], embargo)
        folds.append(Fold(index, train, test, chosen, purged, embargoed))
    return folds, backtest_paths(folds, n_groups, k)


def backtest_paths(folds: list[Fold], n_groups: int, k: int) -> list[list[int]]:
    """Path p takes, for every group g, the p-th split (in order) whose test set contains g."""
    n_paths = comb(n_groups - 1, k - 1)
    by_group = [[f.index for f in folds if g in f.test_groups] for g in range(n_groups)]
    return [[by_group[g][p] for g in range(n_groups)] for p in range(n_paths)]


def purged_kfold_indices(
    ts: np.ndarray, t1: np.ndarray, n_splits: int, embargo: Embargo
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, test positions) per fold — the form scikit-learn style code expects."""
    return [(f.train, f.test) for f in purged_kfold(ts, t1, n_splits, embargo)]


def group_of(ts: np.ndarray, n_groups: int) -> np.ndarray:
    """The CPCV group of each row (the same cut as `cpcv` uses)."""
    ts_us = _as_us(ts)
    unique = np.unique(ts_us)
    starts = np.array([unique[first] for first, _ in group_positions(len(unique), n_groups)])
    return np.searchsorted(starts, ts_us, side="right") - 1
