import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_cli.backtest.engine import run_backtest
from quant_cli.backtest.panel import period_returns
from quant_cli.backtest.strategies import base_weights
from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import forward_return

CFG = {"strategy": "long_short", "quantile": 0.5, "cost_bps": 0.0, "execution": "next_close"}


def target_weights(scores: pl.DataFrame, strategy: str, quantile: float) -> pl.DataFrame:
    """One timestamp's weights, in the frame's symbol order (scores of a single ts)."""
    w = base_weights(
        scores["score"].cast(pl.Float64).fill_null(float("nan")).to_numpy()[None, :],
        {"strategy": strategy, "quantile": quantile},
        np.ones(1, bool),
    )
    return scores.select("symbol", pl.Series("weight", w[0]))


def run(scores, bars, cfg, periods_per_year=252):
    result = run_backtest(scores, bars, cfg, periods_per_year)
    return result.curve, result.summary


def bars_from(closes: dict[str, list[float]]) -> pl.DataFrame:
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    rows = [
        {"symbol": s, "ts": start + dt.timedelta(days=i), "open": c, "close": c}
        for s, series in closes.items()
        for i, c in enumerate(series)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_position_earns_the_return_after_the_next_bar():
    # A's price jumps between bar 1 and 2. A decision at bar 0 fills at bar 1's close and earns it;
    # a decision at bar 1 fills at bar 1+1 and must not earn the jump that happened before the fill.
    bars = bars_from({"A": [100, 100, 110, 110], "B": [100, 100, 100, 100]})
    rets = period_returns(bars, "next_close").filter(pl.col("symbol") == "A")
    assert rets["ret"].to_list() == pytest.approx([0.10, 0.0])


def test_long_short_books_spread_and_costs():
    bars = bars_from({"A": [100, 100, 110, 110], "B": [100, 100, 100, 100]})
    scores = bars.select("symbol", "ts", pl.when(pl.col("symbol") == "A").then(1.0).otherwise(-1.0).alias("score"))
    curve, summary = run(scores, bars, CFG)
    assert curve["gross"].to_list() == pytest.approx([0.05, 0.0])  # 0.5 long A earns 10%
    # Rebalancing back to 0.5 / -0.5 trades the drift: A grew to 0.55 / 1.05, B shrank to 0.5 / 1.05.
    assert curve["turnover"].to_list() == pytest.approx([1.0, (0.55 / 1.05 - 0.5) + (0.5 - 0.5 / 1.05)])
    _, costly = run(scores, bars, CFG | {"cost_bps": 100.0}, periods_per_year=252)
    drift = (0.55 / 1.04 - 0.5) + (0.5 - 0.5 / 1.04)  # after the 1% cost the equity is 1.04
    assert costly["total_return"] == pytest.approx((1 + 0.05 - 0.01) * (1 - 0.01 * drift) - 1)
    assert summary["max_drawdown"] <= 0.0


def test_weights_have_unit_gross_and_zero_net():
    scores = pl.DataFrame({"symbol": list("ABCDE"), "ts": [1] * 5, "score": [5.0, 4.0, 3.0, 2.0, 1.0]})
    w = target_weights(scores, "long_short", 0.2)["weight"].to_list()
    assert w == pytest.approx([0.5, 0.0, 0.0, 0.0, -0.5])
    sign = target_weights(scores.with_columns(pl.col("score") - 3), "sign", 0.2)["weight"]
    assert sign.abs().sum() == pytest.approx(0.8)


def test_single_symbol_long_short_holds_nothing():
    scores = pl.DataFrame({"symbol": ["A"], "ts": [1], "score": [1.0]})
    assert target_weights(scores, "long_short", 0.2)["weight"].to_list() == [0.0]


def test_rebalance_every_holds_weights_between_rebalances():
    bars = bars_from({"A": [100, 101, 102, 103, 104, 105, 106], "B": [100, 99, 98, 97, 96, 95, 94]})
    flip = pl.when(pl.col("ts").dt.day() % 2 == 0).then(1.0).otherwise(-1.0)
    scores = bars.select(
        "symbol", "ts", (flip * pl.when(pl.col("symbol") == "A").then(1.0).otherwise(-1.0)).alias("score")
    )
    daily, _ = run(scores, bars, CFG)
    held, _ = run(scores, bars, CFG | {"rebalance_every": 3}, periods_per_year=252)
    assert daily["turnover"].to_list()[1:] == pytest.approx(
        [2.0] * (daily.height - 1), rel=0.02
    )  # flips every bar (plus drift)
    assert held["turnover"].to_list() == pytest.approx(
        [1.0, 0.0, 0.0, 2.0, 0.0], rel=0.02, abs=1e-15
    )  # trades on bars 0 and 3 only


def test_nan_and_null_scores_are_never_held():
    # Polars ranks NaN above every number: unguarded, the NaN symbol would be the one bought.
    scores = pl.DataFrame({"symbol": list("ABCDE"), "ts": [1] * 5, "score": [float("nan"), 3.0, 2.0, 1.0, None]})
    assert target_weights(scores, "long_short", 0.34)["weight"].to_list() == pytest.approx([0.0, 0.5, 0.0, -0.5, 0.0])
    # n counts only the three scored symbols, so sign weights still sum to at most 1.
    assert target_weights(scores.with_columns(pl.col("score") - 2), "sign", 0.2)["weight"].to_list() == pytest.approx(
        [0.0, 1 / 3, 0.0, -1 / 3, 0.0]
    )


def test_tied_scores_share_the_bucket_whatever_their_names():
    # A and B tie for the single long place: each gets half of it, not whichever sorts last by name.
    scores = pl.DataFrame({"symbol": list("ABCD"), "ts": [1] * 4, "score": [3.0, 3.0, 1.0, 0.0]})
    assert target_weights(scores, "long_short", 0.25)["weight"].to_list() == pytest.approx([0.25, 0.25, 0.0, -0.5])
    renamed = scores.with_columns(pl.Series("symbol", list("DCBA")))
    assert target_weights(renamed, "long_short", 0.25)["weight"].to_list() == pytest.approx([0.25, 0.25, 0.0, -0.5])
    # Every score tied: no information, no position (long and short shares cancel), and no net.
    flat = target_weights(scores.with_columns(pl.lit(1.0).alias("score")), "long_short", 0.5)["weight"]
    assert flat.to_list() == pytest.approx([0.0] * 4)


@pytest.mark.parametrize("execution", ["next_close", "next_open"])
def test_one_bar_label_is_the_return_the_backtest_books(execution):
    """forward_return(h=1) and the engine's period return are the same number on the same bars,
    including across missing days and with the rows given out of order (DESIGN.md §3)."""
    bars = generate(symbols=3, bars=80, seed=4)
    bars = bars.filter(~((pl.col("symbol") == "S001") & (pl.col("ts").dt.day() % 5 == 0))).sample(
        fraction=1.0, shuffle=True, seed=1
    )
    labels = forward_return(bars, 1, execution)
    booked = period_returns(bars, execution)
    both = labels.join(booked, on=["symbol", "ts"], how="full", coalesce=True)
    assert both.height == labels.height == booked.height
    assert both["label"].to_list() == pytest.approx(both["ret"].to_list(), rel=1e-12)
    # ...and a held position earns it: one unit long one symbol books its label as the period's gross.
    one = labels.filter(pl.col("symbol") == "S001")
    curve, _ = run(
        one.select("symbol", "ts", pl.lit(1.0).alias("score")),
        bars,
        CFG | {"strategy": "sign", "execution": execution},
        periods_per_year=252,
    )
    assert curve.sort("ts")["gross"].to_list() == pytest.approx(one.sort("ts")["label"].to_list(), rel=1e-12)


def scores_from(table: dict[str, list[float | None]]) -> pl.DataFrame:
    """symbol -> score per bar (None: no row for that symbol on that bar)."""
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    rows = [
        {"symbol": s, "ts": start + dt.timedelta(days=i), "score": v}
        for s, values in table.items()
        for i, v in enumerate(values)
        if v is not None
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


FLAT = {s: [100.0] * 8 for s in "ABCD"}


def test_a_symbol_missing_on_a_rebalance_date_is_flat_until_the_next_one():
    # A is long after bar 0; on the rebalance at bar 2 it has no row, so B takes the long side. A's
    # old weight must not come back on bar 3: that would be 1.5 gross (two longs of 0.5, one short).
    scores = scores_from(
        {"A": [4, 1, None, 4, 4, 4], "B": [3, 2, 4, 2, 2, 2], "C": [2, 3, 3, 3, 3, 3], "D": [1, 4, 1, 1, 1, 1]}
    )
    curve, _ = run(scores, bars_from(FLAT), CFG | {"quantile": 0.25, "rebalance_every": 2}, periods_per_year=252)
    assert curve["turnover"].to_list() == pytest.approx([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])  # A out on 2, back on 4
    assert curve["exposure"].to_list() == pytest.approx([1.0] * 6)


def test_a_symbol_that_leaves_the_scored_set_is_closed_and_costed():
    # A (long) has no score from bar 2 on: closing it (0.5) and opening B (0.5) is 1.0 of turnover.
    scores = scores_from({"A": [4, 4, None, None], "B": [3, 3, 4, 4], "C": [2, 2, 2, 2], "D": [1, 1, 1, 1]})
    curve, _ = run(scores, bars_from(FLAT), CFG | {"quantile": 0.25}, periods_per_year=252)
    assert curve["turnover"].to_list() == pytest.approx([1.0, 0.0, 1.0, 0.0])
    _, summary = run(scores, bars_from(FLAT), CFG | {"quantile": 0.25, "cost_bps": 10.0}, periods_per_year=252)
    assert summary["total_cost"] == pytest.approx(2.0 * 10 / 1e4, rel=1e-2)  # (+ re-trimming what the costs shifted)
    assert curve["exposure"].to_list() == pytest.approx([1.0] * 4)


def test_periods_per_year_are_the_bars_observed_in_the_data():
    from quant_cli.data.frequency import observed_periods_per_year, periods_per_year

    hours = pl.datetime_range(dt.datetime(2021, 1, 4), dt.datetime(2022, 1, 3), "1h", eager=True, time_zone="UTC")
    fx = hours.filter(hours.dt.weekday() <= 5)  # FX trades 24 hours, 5 days a week
    assert observed_periods_per_year(fx) == pytest.approx(24 * 5 * 365.25 / 7, rel=0.01)  # ~6,260, not 1,638
    assert observed_periods_per_year(hours) == pytest.approx(24 * 365.25, rel=0.01)  # crypto: 8,766
    assert periods_per_year("1h") == pytest.approx(1638)  # what a 6.5-hour equity session assumption gives
    assert observed_periods_per_year(hours.head(100)) is None  # under four weeks: too short to tell
