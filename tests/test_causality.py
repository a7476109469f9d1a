"""DESIGN.md §3: every registered feature is causal — bars after t never change its value at t.

Checked twice: on a panel whose symbols share one calendar, and on one whose calendars differ
(missing days, a benchmark with gaps, late listings, a halt), where alignment leaks show.

The parametrisation is built from the registry itself, so a new family is tested the moment it
is registered. Families take the default windows plus a short one.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quant_cli.features import REGISTRY, FeatureOptions, expression_eval
from quant_cli.features.expression import BINARY, OPS, parse
from quant_cli.features.expression_eval import definition, expression_feature, is_expression
from quant_cli.features.registry import Family, Feature
from quant_cli.features.testing import assert_causal, cut_points, perturb_after

# Every family, every kind of variant: windows (a short one too), the alpha158 windows, a coarser
# timeframe, and cross-sectional transforms of a plain and of a composite feature.
SECTION = {
    "sets": ["all"],
    "windows": [2, 5, 10, 20, 60],
    "alpha158_windows": [5, 20, 60],
    "timeframes": ["1w"],
    "cross_sectional": ["ret_5", "RSV20"],
    # factor expressions (issue 23 §1): every operator, each in its own feature so a leak names it
    "expressions": {
        "x_ref": "$close / Ref($close, 5) - 1",
        "x_delta": "Delta($volume, 3)",
        "x_mean": "Mean($close, 10) / $close",
        "x_sum": "Sum($volume, 5)",
        "x_std": "Std($close, 10)",
        "x_var": "Var($high - $low, 10)",
        "x_skew": "Skew($close, 10)",
        "x_kurt": "Kurt($close, 10)",
        "x_max": "Max($high, 10)",
        "x_min": "Min($low, 10)",
        "x_med": "Med($close, 10)",
        "x_quantile": "Quantile($close, 10, 0.8)",
        "x_rank": "Rank($close, 10)",
        "x_idxmax": "IdxMax($high, 10)",
        "x_idxmin": "IdxMin($low, 10)",
        "x_slope": "Slope($close, 10)",
        "x_rsquare": "Rsquare($close, 10)",
        "x_resi": "Resi($close, 10)",
        "x_ema": "EMA($close, 12)",
        "x_wma": "WMA($close, 10)",
        "x_corr": "Corr($close, Log($volume + 1), 10)",
        "x_cov": "Cov($close, $vwap, 10)",
        "x_elementwise": "Abs(Log($close)) * Sign($close - $open) + Power($close, 0.5) + Greater($open, $close)"
        " - Less($open, $close)",
        "x_if": "If($close >= Ref($close, 1), ($high - $low) / $close, -$low) + ($close != $open) + ($close == $open)"
        " + ($close > $open) - ($close < $open) * ($close <= $open)",
        "x_nested": "Corr(Mean($close, 5), Ref(EMA($volume, 5), 2), 20) / (Std(Delta($close, 1), 20) + 1e-12)",
    },
}
FEATURES = REGISTRY.resolve(SECTION).features
OPTIONS = FeatureOptions(benchmark="S000")  # the cross-asset families need a benchmark


@pytest.fixture(scope="module")
def panel(small_panel: pl.DataFrame) -> pl.DataFrame:
    """The small panel plus a `sector` column (sector-relative features read it)."""
    return small_panel.with_columns(sector=pl.when(pl.col("symbol") < "S002").then(pl.lit("a")).otherwise(pl.lit("b")))


def test_every_family_and_expression_operator_is_covered() -> None:
    builtin = [f for f in FEATURES if not is_expression(f)]
    assert {f.family.pattern for f in builtin} == set(REGISTRY.families)
    used = {node.name for f in FEATURES if is_expression(f) for node in _calls(parse(f.name, definition(f)).root)}
    assert used >= set(OPS) | set(BINARY.values()) | {"Neg"}


def _calls(node):  # noqa: ANN001, ANN202
    yield node
    for arg in node.args:
        yield from _calls(arg)


@pytest.mark.parametrize("feature", FEATURES, ids=[f.name for f in FEATURES])
def test_feature_is_causal(feature: Feature, panel: pl.DataFrame) -> None:
    assert_causal([feature], panel, options=OPTIONS)


def test_whole_registry_together_is_causal(panel: pl.DataFrame) -> None:
    assert_causal(FEATURES, panel, seed=11, options=OPTIONS)


def test_harness_bites_on_a_benchmark_that_is_back_filled(panel: pl.DataFrame) -> None:
    """Aligning the benchmark with strategy="forward" (back-fill) must be caught."""

    def leaky(bars: pl.DataFrame) -> pl.DataFrame:
        bench = bars.filter(pl.col("symbol") == "S000").select("ts", pl.col("close").alias("b"))
        shifted = bench.with_columns(pl.col("ts") - pl.duration(hours=1))  # visible an hour early
        out = bars.sort("ts").join_asof(shifted, on="ts", strategy="forward").sort("symbol", "ts")
        return out.select("symbol", "ts", (pl.col("b").log().diff().over("symbol")).alias("bench_ret"))

    with pytest.raises(AssertionError, match="'bench_ret' is not causal"):
        assert_causal(leaky, panel)


def _leaky(name: str, build) -> Feature:  # noqa: ANN001
    return Feature(Family(name, ("close",), ("test",), "deliberately non-causal", build))


@pytest.mark.parametrize(
    ("feature", "how"),
    [
        (_leaky("peek_next", lambda: pl.col("close").shift(-1) / pl.col("close")), "perturbed"),
        (_leaky("centered_ma", lambda: pl.col("close").rolling_mean(5, center=True)), "perturbed"),
        (_leaky("vs_last_close", lambda: pl.col("close") / pl.col("close").last()), "perturbed"),
        (_leaky("history_length", lambda: pl.len().cast(pl.Float64)), "truncated"),
    ],
    ids=lambda v: v.name if isinstance(v, Feature) else v,
)
def test_harness_catches_leaks(feature: Feature, how: str, small_panel: pl.DataFrame) -> None:
    with pytest.raises(AssertionError, match=rf"feature '{feature.name}' is not causal: .* when bars after .* {how}"):
        assert_causal([feature], small_panel)


def test_harness_catches_a_leaky_expression_operator(monkeypatch, small_panel: pl.DataFrame) -> None:
    """Break Ref so that it reads n bars AHEAD within the symbol (what a sign slip in the kernel call
    would do): every expression using it must fail the harness; restored, the same expression passes."""
    feature = expression_feature("mom", "$close / Ref($close, 2) - 1")
    assert_causal([feature], small_panel)

    def ahead(x: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
        out = np.full_like(x, np.nan)
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            out[lo : hi - n] = x[lo + n : hi]
        return out

    monkeypatch.setitem(expression_eval.OFFSET, "Ref", ahead)
    with pytest.raises(AssertionError, match=r"feature 'mom' is not causal: .* when bars after .* perturbed"):
        assert_causal([feature], small_panel)


def test_harness_accepts_a_pipeline_callable(small_panel: pl.DataFrame) -> None:
    def leak(bars: pl.DataFrame) -> pl.DataFrame:
        return bars.select("symbol", "ts", (pl.col("close") - pl.col("close").mean().over("symbol")).alias("demeaned"))

    with pytest.raises(AssertionError, match="'demeaned' is not causal"):
        assert_causal(leak, small_panel)


def test_perturbation_changes_only_the_future_and_keeps_bars_valid(small_panel: pl.DataFrame) -> None:
    t = cut_points(small_panel)[1]
    out = perturb_after(small_panel, t, seed=3)
    past = pl.col("ts") <= t
    assert out.filter(past).equals(small_panel.filter(past))
    future_close = out.filter(~past)["close"] != small_panel.filter(~past)["close"]
    assert future_close.all()
    assert out.select(
        (pl.col("high") >= pl.max_horizontal("open", "close")).all()
        & (pl.col("low") <= pl.min_horizontal("open", "close")).all()
    ).item()


def test_cut_points_include_one_inside_the_warm_up(small_panel: pl.DataFrame) -> None:
    cuts = cut_points(small_panel, n=4)
    ts = small_panel["ts"].unique().sort()
    assert len(cuts) == 4 and cuts[0] == ts[3] and all(ts[0] < c < ts[-1] for c in cuts)


# ---- the same check on a panel whose symbols keep different calendars ----------------------------


@pytest.fixture(scope="module")
def ragged_panel(panel: pl.DataFrame) -> pl.DataFrame:
    """Symbols on different calendars: the benchmark misses whole runs of days (so the nearest bar
    is often a later one), others start late, miss random days or halt for two weeks."""
    day = pl.col("ts").rank("dense").over("symbol")
    keep = (
        pl.when(pl.col("symbol") == "S000")
        .then((day % 11 != 3) & (day % 11 != 4) & (day % 17 != 9))  # benchmark gaps
        .when(pl.col("symbol") == "S001")
        .then(day > 40)  # listed late
        .when(pl.col("symbol") == "S002")
        .then(pl.col("close").hash(1) % 10 != 0)  # random days missing
        .when(pl.col("symbol") == "S003")
        .then((day < 120) | (day > 134))  # a halt
        .otherwise(day > 7)
    )
    return panel.filter(keep)


def test_ragged_panel_really_has_different_calendars(ragged_panel: pl.DataFrame) -> None:
    calendars = ragged_panel.group_by("symbol").agg(pl.col("ts").sort()).sort("symbol")["ts"].to_list()
    assert len({tuple(c) for c in calendars}) == 5
    assert len({c[0] for c in calendars}) == 3  # three different start dates


def test_whole_registry_is_causal_on_misaligned_calendars(ragged_panel: pl.DataFrame) -> None:
    """Benchmark alignment, cross-sectional transforms and coarser timeframes across calendars
    that do not line up: a benchmark bar after t must never reach a symbol's bar t."""
    assert_causal(FEATURES, ragged_panel, seed=5, options=OPTIONS)


def test_nearest_benchmark_alignment_is_caught_on_misaligned_calendars(
    ragged_panel: pl.DataFrame, panel: pl.DataFrame
) -> None:
    """join_asof(strategy="nearest") instead of "backward": invisible on one shared calendar, a leak
    as soon as the benchmark misses a day (its next bar is then the nearest)."""

    def nearest(bars: pl.DataFrame) -> pl.DataFrame:
        bench = bars.filter(pl.col("symbol") == "S000").select("ts", pl.col("close").alias("b"))
        out = bars.sort("ts").join_asof(bench, on="ts", strategy="nearest").sort("symbol", "ts")
        return out.select("symbol", "ts", (pl.col("close") / pl.col("b")).alias("vs_bench"))

    assert_causal(nearest, panel)  # one shared calendar: the leak cannot show
    with pytest.raises(AssertionError, match="'vs_bench' is not causal"):
        assert_causal(nearest, ragged_panel)
