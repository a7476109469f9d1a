"""Leakage properties of the chronological split, over random panels (hypothesis).

1. Purge and embargo: no earlier segment's label interval reaches a later segment's first bar,
   and no later-segment row sits in the embargo after a boundary (bars or a duration).
2. The future cannot reach training: rewriting every price at or after the first validation
   timestamp leaves the training rows, their labels, t1 and sample weights exactly as they were
   — for every label kind, including cross-sectional labels over symbols with different calendars.
3. End to end through `prepare` (features, labels, split, scaler, weights from a real store).

No excluded row is deleted by the split: `segmented` keeps only the rows that train or are scored.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from helpers import labels_for, random_bars
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_cli.data.store import pin, write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.table import fit_weights, prepare
from quant_cli.errors import DataError
from quant_cli.features.testing import perturb_after
from quant_cli.recipe import load_recipe
from quant_cli.splits.chronological import assign_segments, plan_split

KINDS = ("forward", "log_rank", "zscore", "direction", "triple_barrier")
WEIGHTING = {"sample_weight": "uniqueness", "time_decay": 0.5}
_TICK = dt.timedelta(microseconds=1)  # perturb_after(t) changes bars after t: from `start` on, start - 1 us


def split_cfg(embargo, dates: tuple[dt.datetime, dt.datetime] | None) -> dict:
    cfg = load_recipe(None)["split"] | {"embargo": embargo}
    if dates:
        cfg |= {"val_start": dates[0].isoformat(), "test_start": dates[1].isoformat()}
    return cfg


@st.composite
def cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bars = random_bars(rng, draw(st.integers(2, 4)))
    horizon = draw(st.integers(1, 6))
    embargo = draw(st.one_of(st.integers(0, 6), st.sampled_from(["2d", "5d", "36h"])))
    dates = None
    if draw(st.booleans()):  # explicit dates that need not fall on a bar
        first = bars["ts"].min()
        dates = (first + dt.timedelta(days=50, hours=7), first + dt.timedelta(days=95, hours=7))
    return bars, draw(st.sampled_from(KINDS)), horizon, split_cfg(embargo, dates)


def segmented(bars, kind, horizon, cfg, plan=None):
    labels = labels_for(bars, kind, horizon).sort("ts", "symbol")
    plan = plan or plan_split(labels["ts"], cfg, horizon)
    return assign_segments(labels, plan)[0], plan


@settings(max_examples=80, deadline=None)
@given(cases())
def test_segments_never_overlap_and_embargo_holds(case):
    bars, kind, horizon, cfg = case
    try:
        frame, plan = segmented(bars, kind, horizon, cfg)
    except DataError as exc:  # a panel too short for the split is refused, not mis-split
        assert "too few" in str(exc)
        return
    unique = np.unique(bars["ts"].to_numpy())
    segments = [frame.filter(pl.col("segment") == s) for s in ("train", "val", "test")]
    for i, earlier in enumerate(segments):
        for later in segments[i + 1 :]:
            if earlier.height and later.height:  # every later interval starts at or after later's first ts
                assert earlier["t1"].max() < later["ts"].min(), "a label interval reaches the next segment"
    for later, boundary in ((segments[1], plan.val_start), (segments[2], plan.test_start)):
        stop = _embargo_stop(unique, np.datetime64(boundary.replace(tzinfo=None), "us"), plan.embargo)
        ts = later["ts"].to_numpy()
        assert not ((ts >= np.datetime64(boundary.replace(tzinfo=None), "us")) & (ts < stop)).any(), (
            "a row sits in the embargo"
        )


def _embargo_stop(unique: np.ndarray, boundary: np.datetime64, embargo) -> np.datetime64:
    """First instant after the embargo (an independent restatement of the rule)."""
    if isinstance(embargo, str):
        unit = {"d": "D", "h": "h"}[embargo[-1]]
        return boundary + np.timedelta64(int(embargo[:-1]), unit)
    after = unique[unique >= boundary]
    return after[embargo] if embargo < len(after) else boundary + np.timedelta64(10**6, "D")


@settings(max_examples=80, deadline=None)
@given(cases(), st.integers(0, 1000))
def test_rewriting_the_future_leaves_training_rows_unchanged(case, seed):
    bars, kind, horizon, cfg = case
    try:
        before, plan = segmented(bars, kind, horizon, cfg)
    except DataError as exc:  # too short for this split: covered by the test above
        assert "too few" in str(exc)
        return
    after, _ = segmented(perturb_after(bars, plan.val_start - _TICK, seed), kind, horizon, cfg, plan)
    train_before, train_after = (f.filter(pl.col("segment") == "train").sort("symbol", "ts") for f in (before, after))
    assert train_before.equals(train_after), "a training label changed when only later prices changed"
    weights_before, weights_after = (
        fit_weights(f.filter(pl.col("segment") == "train"), bars, WEIGHTING) for f in (before, after)
    )
    if weights_before is not None:
        assert weights_before.sort("symbol", "ts").equals(weights_after.sort("symbol", "ts")), (
            "training weights saw later rows"
        )


@pytest.mark.parametrize("label", [{"kind": "forward_return", "cross_sectional": "rank"}, {"kind": "triple_barrier"}])
def test_prepare_end_to_end_ignores_the_future(tmp_path, label):
    """Features, labels, split, scaler and weights from a real store: rewriting prices from the
    first validation day on changes none of what the model is trained on."""
    bars = generate(symbols=4, bars=260, seed=5)
    bars = bars.filter(~((pl.col("symbol") == "S001") & pl.col("ts").dt.day().is_in([3, 4])))  # a different calendar
    recipe = load_recipe(
        None,
        [
            'data.dataset="p"',
            'features.sets=["core"]',
            f'label.kind="{label["kind"]}"',
            "label.horizon=5",
            f'label.cross_sectional="{label.get("cross_sectional", "none")}"',
            'split.val_start="2015-08-03"',
            'split.test_start="2015-10-01"',
            'split.sample_weight="uniqueness"',
            "split.time_decay=0.5",
            'preprocess.scaler="robust"',
            'preprocess.fill="median"',
        ],
    )
    first = _prepared(tmp_path / "a", bars, recipe)
    start = dt.datetime(2015, 8, 3, tzinfo=dt.timezone.utc)
    second = _prepared(tmp_path / "b", perturb_after(bars, start - _TICK, 1), recipe)
    assert first.pipeline.state == second.pipeline.state, "the scaler saw validation or test rows"
    train_a, train_b = first.segment("train"), second.segment("train")
    assert train_a.equals(train_b)
    assert (first.inputs(train_a) == second.inputs(train_b)).all(), "training model inputs changed"
    assert not first.segment("test").equals(second.segment("test"))  # the rewrite did change later rows


def _prepared(data_dir, bars, recipe):
    write_store(data_dir, "p", bars, "test")
    return prepare(recipe, pin(data_dir, "p"))
