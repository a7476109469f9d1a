"""Walk-forward folds by hand: rolling and anchored windows in bars and durations, and the purge +
embargo each fold gets from the split stage's own rule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.dataset.table import Table
from quant_cli.errors import DataError, RecipeError
from quant_cli.recipe import load_recipe
from quant_cli.walkforward.folds import build_folds
from quant_cli.walkforward.stage import _tasks

DAY0 = dt.datetime(2020, 1, 6, tzinfo=dt.timezone.utc)  # a Monday


def _days(offsets) -> np.ndarray:
    return np.array([np.datetime64("2020-01-06", "us") + np.timedelta64(int(d), "D") for d in offsets])


def _cfg(**kw):
    return {"mode": "rolling", "train": 5, "test": 3, "step": None, "validation": 0} | kw


def _d(offset: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=offset)


def _summary(folds):
    return [(f.window_start, f.boundary, f.train_end, f.test_start, f.test_end) for f in folds]


def test_rolling_folds_in_bars():
    """20 consecutive days, train 5, embargo 2, test 3: the first test starts at bar 7 = 5 + 2."""
    folds = build_folds(_days(range(20)), _cfg(), embargo=2)
    assert _summary(folds) == [
        (_d(0), _d(5), _d(4), _d(7), _d(9)),
        (_d(3), _d(8), _d(7), _d(10), _d(12)),
        (_d(6), _d(11), _d(10), _d(13), _d(15)),
        (_d(9), _d(14), _d(13), _d(16), _d(18)),
        (_d(12), _d(17), _d(16), _d(19), _d(19)),  # the last test window is cut by the data
    ]
    assert [f.index for f in folds] == [0, 1, 2, 3, 4] and all(f.val_start is None for f in folds)


def test_anchored_folds_train_from_the_first_bar_and_step_leaves_gaps():
    folds = build_folds(_days(range(20)), _cfg(mode="anchored", step=5), embargo=0)
    assert _summary(folds) == [
        (_d(0), _d(5), _d(4), _d(5), _d(7)),
        (_d(0), _d(10), _d(9), _d(10), _d(12)),
        (_d(0), _d(15), _d(14), _d(15), _d(17)),
    ]


def test_durations_follow_the_clock_not_the_bar_count():
    """Weekdays only: '7d' windows hold five bars; a bar embargo counts bars, weekends do not count."""
    weekdays = [d for d in range(40) if d % 7 < 5]
    folds = build_folds(_days(weekdays), _cfg(train="7d", test="7d"), embargo=1)
    assert _summary(folds)[:2] == [
        (_d(0), _d(7), _d(4), _d(8), _d(14)),  # boundary = the bar before the test start
        (_d(7), _d(14), _d(11), _d(15), _d(21)),  # test windows step by 7 days: [15, 22)
    ]
    by_duration = build_folds(_days(weekdays), _cfg(train="7d", test="7d"), embargo="3d")
    assert _summary(by_duration)[0] == (_d(0), _d(7), _d(4), _d(10), _d(16))  # boundary = test start - 3 days


def test_validation_tail_and_too_little_data():
    fold = build_folds(_days(range(20)), _cfg(validation=2), embargo=1)[0]
    assert (fold.window_start, fold.val_start, fold.boundary, fold.test_start) == (_d(0), _d(3), _d(5), _d(6))
    with pytest.raises(
        DataError,
        match=r"^walk-forward: 20 labelled timestamps are too few for a training window of 30 plus an embargo of 2",
    ):
        build_folds(_days(range(20)), _cfg(train=30), embargo=2)
    with pytest.raises(
        RecipeError, match=r"walkforward.step \(2\) is shorter than walkforward.test \('7d'\) on this data"
    ):
        build_folds(_days(range(40)), _cfg(test="7d", step=2), embargo=1)


def _marked(folds, rows: pl.DataFrame, recipe) -> list[pl.DataFrame]:
    table = Table(rows, [], "none", Path("unused"))  # fill = zero: the feature table is not read
    calendar = rows.select("symbol", "ts")
    return [task.rows for task in _tasks(folds, table, None, calendar, recipe, "cpu")]


def test_each_fold_is_purged_and_embargoed_by_the_split_rule():
    """Two symbols, labels spanning 2 bars (t1 = ts + 2 days). Fold 0 (train 0-5, validation 4-5,
    boundary 6, embargo 1, test 7-9): training rows whose label reaches the validation start
    (day 4) are purged (days 2, 3), validation rows whose label reaches the boundary (days 4, 5),
    the first embargo bar of the validation tail (4) and of the test segment (6: the gap) are
    embargoed, and nothing outside the fold's window is there."""
    days = list(range(20))
    ts = [_d(d) for d in days]
    rows = pl.DataFrame(
        {"symbol": ["A"] * 20 + ["B"] * 20, "ts": ts * 2, "label": [0.1] * 40, "t1": [_d(d + 2) for d in days] * 2}
    ).with_columns(pl.col("ts", "t1").cast(pl.Datetime("us", "UTC")))
    recipe = load_recipe(None, ["split.embargo=1"])
    folds = build_folds(_days(days), _cfg(train=6, validation=2), embargo=1)
    assert (folds[0].window_start, folds[0].val_start, folds[0].boundary, folds[0].test_start) == (
        _d(0),
        _d(4),
        _d(6),
        _d(7),
    )
    marked = _marked(folds, rows, recipe)[0].filter(pl.col("symbol") == "A")
    why = {row["ts"].day - DAY0.day: (row["segment"], row["excluded"]) for row in marked.iter_rows(named=True)}
    assert why == {
        0: ("train", None),
        1: ("train", None),
        2: ("train", "purged"),
        3: ("train", "purged"),
        4: ("val", "purged"),
        5: ("val", "purged"),
        6: ("test", "embargoed"),
        7: ("test", None),
        8: ("test", None),
        9: ("test", None),
    }


# ---- properties over random panels ------------------------------------------------------------------

from helpers import labels_for, random_bars  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def walk_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["forward", "triple_barrier", "cross_sectional_rank"]))
    labels = labels_for(random_bars(rng, draw(st.integers(1, 3))), kind, draw(st.integers(1, 6)))
    cfg = _cfg(
        mode=draw(st.sampled_from(["rolling", "anchored"])),
        train=draw(st.one_of(st.integers(8, 40), st.sampled_from(["15d", "40d"]))),
        test=draw(st.one_of(st.integers(3, 15), st.sampled_from(["7d", "12d"]))),
        validation=draw(st.sampled_from([0, 3, "4d"])),
    )
    return (
        labels.with_columns(pl.col("ts", "t1").cast(pl.Datetime("us", "UTC"))),
        cfg,
        draw(st.one_of(st.integers(0, 5), st.sampled_from(["2d", "5d"]))),
    )


@settings(max_examples=40, deadline=None)
@given(walk_cases())
def test_folds_never_train_on_what_they_test(case):
    """Every fold: training and validation labels end before its boundary; the boundary is the
    embargo before the test start; scored rows lie in the test window; test windows tile time
    forward, each timestamp scored at most once; rolling windows hold `train` bars."""
    labels, cfg, embargo = case
    calendar = np.unique(labels.filter(pl.col("label").is_not_null())["ts"].to_numpy())
    try:
        folds = build_folds(calendar, cfg, embargo)
    except (DataError, RecipeError):
        return  # too little data for the windows, or a validation tail as long as the window
    recipe = load_recipe(
        None, [f"split.embargo={embargo!r}" if isinstance(embargo, int) else f'split.embargo="{embargo}"']
    )
    cal = calendar.astype("datetime64[us]")
    for fold, rows in zip(folds, _marked(folds, labels, recipe)):
        kept = rows.filter(pl.col("excluded").is_null())
        fitted = kept.filter(pl.col("segment").is_in(["train", "val"]))
        assert (fitted["t1"] < fold.boundary).all() and (fitted["ts"] >= fold.window_start).all()
        train = kept.filter(pl.col("segment") == "train")
        if fold.val_start is not None:
            assert (train["t1"] < fold.val_start).all()
        scored = kept.filter((pl.col("segment") == "test") & (pl.col("ts") >= fold.test_start))
        assert (scored["ts"] <= fold.test_end).all()
        gap = cal[
            (cal >= np.datetime64(fold.boundary.replace(tzinfo=None)))
            & (cal < np.datetime64(fold.test_start.replace(tzinfo=None)))
        ]
        if isinstance(embargo, int):
            assert len(gap) == embargo
        else:
            assert fold.test_start - fold.boundary == dt.timedelta(days=int(embargo[:-1]))
        if cfg["mode"] == "rolling" and isinstance(cfg["train"], int):
            assert (
                (cal >= np.datetime64(fold.window_start.replace(tzinfo=None)))
                & (cal < np.datetime64(fold.boundary.replace(tzinfo=None)))
            ).sum() == cfg["train"]
    assert all(a.test_end < b.test_start for a, b in zip(folds, folds[1:]))
    tested = [
        (cal >= np.datetime64(f.test_start.replace(tzinfo=None)))
        & (cal <= np.datetime64(f.test_end.replace(tzinfo=None)))
        for f in folds
    ]
    later = cal >= np.datetime64(folds[0].test_start.replace(tzinfo=None))
    assert (np.sum(tested, axis=0)[later] == 1).all(), (
        "step = test: every later timestamp is scored by exactly one fold"
    )
