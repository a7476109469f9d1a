"""Property tests: for every fold of purged k-fold and CPCV, over random panels, label kinds
(fixed-horizon, triple-barrier touch times, cross-sectional), dropped rows, horizons and
embargoes in bars or as durations, no training label interval overlaps a test label interval and
no training row lies in the embargo after a test block."""

from math import comb

import numpy as np
import polars as pl
from helpers import labels_for, random_bars
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_cli.splits.purged import cpcv, group_of, purged_kfold

LABEL_KINDS = ("forward", "triple_barrier", "cross_sectional_rank")


@st.composite
def panels(draw):
    """(labels sorted by time, horizon): random calendars, label kind, and ~10% of rows dropped."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    horizon = draw(st.integers(1, 8))
    labels = labels_for(random_bars(rng, draw(st.integers(1, 4))), draw(st.sampled_from(LABEL_KINDS)), horizon)
    if draw(st.booleans()):  # rows lost to fill = "drop" or non-finite labels
        labels = labels.filter(pl.Series(rng.random(labels.height) > 0.1))
    return labels.sort("ts", "symbol"), horizon


embargoes = st.one_of(st.integers(0, 10), st.sampled_from(["1d", "3d", "5d", "12h"]))


def _intervals(labels, idx):
    return labels["ts"].to_numpy()[idx].astype("datetime64[us]"), labels["t1"].to_numpy()[idx].astype("datetime64[us]")


def _assert_fold_is_clean(labels, fold, embargo):
    ts_train, t1_train = _intervals(labels, fold.train)
    ts_test, t1_test = _intervals(labels, fold.test)
    assert len(np.intersect1d(fold.train, fold.test)) == 0
    # Test rows form blocks; check each block (contiguous in time) separately.
    unique = np.unique(labels["ts"].to_numpy().astype("datetime64[us]"))
    block_ids = np.searchsorted(unique, ts_test)
    breaks = np.flatnonzero(np.diff(np.unique(block_ids)) > 1)
    for block in np.split(np.unique(block_ids), breaks + 1):
        lo, hi = unique[block[0]], unique[block[-1]]
        in_block = (ts_test >= lo) & (ts_test <= hi)
        block_t1 = t1_test[in_block].max()
        overlap = (ts_train <= block_t1) & (t1_train >= lo)
        assert not overlap.any(), "a training label interval overlaps a test label interval"
        in_embargo = (ts_train > block_t1) & (ts_train <= _embargo_limit(unique, block_t1, embargo))
        assert not in_embargo.any(), "a training row lies inside the embargo"


def _embargo_limit(unique, block_t1, embargo):
    """Last instant of the embargo after a block whose labels end at block_t1 (independent of cv.py)."""
    if isinstance(embargo, str):
        return block_t1 + np.timedelta64(int(embargo[:-1]), embargo[-1].replace("d", "D"))
    after = unique[unique > block_t1]
    return after[min(embargo, len(after)) - 1] if embargo and len(after) else block_t1


@settings(max_examples=80, deadline=None)
@given(panels(), st.integers(2, 6), embargoes)
def test_purged_kfold_never_leaks(panel, n_splits, embargo):
    labels, _ = panel
    folds = purged_kfold(labels["ts"].to_numpy(), labels["t1"].to_numpy(), n_splits, embargo)
    assert len(folds) == n_splits
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(labels.height))
    for fold in folds:
        _assert_fold_is_clean(labels, fold, embargo)


@settings(max_examples=40, deadline=None)
@given(panels(), st.integers(3, 6), st.integers(1, 3), embargoes)
def test_cpcv_never_leaks_and_paths_cover_every_group_once(panel, n_groups, k, embargo):
    k = min(k, n_groups - 1)
    labels, _ = panel
    folds, paths = cpcv(labels["ts"].to_numpy(), labels["t1"].to_numpy(), n_groups, k, embargo)
    assert len(folds) == comb(n_groups, k) and len(paths) == comb(n_groups - 1, k - 1)
    for fold in folds:
        _assert_fold_is_clean(labels, fold, embargo)
    groups = group_of(labels["ts"].to_numpy(), n_groups)
    for path in paths:
        for g, split_index in enumerate(path):
            assert g in folds[split_index].test_groups
            assert set(np.flatnonzero(groups == g)) <= set(folds[split_index].test.tolist())
    # every (group, split) pair with g in the split's test set is used by exactly one path
    used = sorted((g, s) for path in paths for g, s in enumerate(path))
    assert used == sorted((g, f.index) for f in folds for g in f.test_groups)


def test_duration_embargo():
    ts = np.arange(60).astype("datetime64[D]")
    folds = purged_kfold(ts, ts + 2, 3, "5d")
    first = folds[0]
    block_end = (ts + 2)[first.test].max()
    assert not ((ts[first.train] > block_end) & (ts[first.train] <= block_end + np.timedelta64(5, "D"))).any()
    assert first.embargoed == 5


def test_duration_embargo_counts_from_the_block_end_not_the_last_row():
    """The block's labels end on a day with no row (a gap): the 5 days after it are still embargoed."""
    days = np.array([d for d in range(60) if d not in (20, 21)])
    ts = days.astype("datetime64[D]")
    first = purged_kfold(ts, ts + 2, 3, "5d")[0]
    block_end = (ts + 2)[first.test].max()
    assert block_end == np.datetime64(21, "D")  # the last test row is day 19, its label ends on day 21
    train = ts[first.train]
    assert not ((train > block_end) & (train <= block_end + np.timedelta64(5, "D"))).any()
