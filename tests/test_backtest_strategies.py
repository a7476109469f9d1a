"""Every strategy on a hand-checked 2-symbol, 5-bar panel: target positions, the one-bar execution
lag, costs and PnL; sizing, limits, rebalance calendars, weights as input; and the property that
a backtest never books a price from before its fill (the execution lag)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_cli.backtest.engine import run_backtest, with_defaults
from quant_cli.backtest.simulate import Costs, simulate
from quant_cli.backtest.strategies import check_universe, limit, rebalance_rows, size, universe_of
from quant_cli.cli import app
from quant_cli.errors import RecipeError

DAY0 = dt.datetime(2020, 1, 6, tzinfo=dt.timezone.utc)  # a Monday
# Decision rows 0..2 have a next-bar return (next_close: close[t+2] / close[t+1] - 1):
#   A: 110/100 - 1 = +10%, 99/110 - 1 = -10%, 0      B: 0, 55/50 - 1 = +10%, 0
CLOSES = {"A": [100.0, 100.0, 110.0, 99.0, 99.0], "B": [50.0, 50.0, 50.0, 55.0, 55.0]}
R = np.array([[0.10, 0.0], [-0.10, 0.10], [0.0, 0.0]])
SCORES = {"A": [2.0, 1.0, 2.0, 1.0, 2.0], "B": [-1.0, 2.0, -1.0, 2.0, -1.0]}
BASE = {"quantile": 0.5, "cost_bps": 0.0, "execution": "next_close", "top_k": 1, "threshold": 1.5}

LS = [[0.5, -0.5], [-0.5, 0.5], [0.5, -0.5]]
LONG = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
EXPECTED = {
    "long_short": ({}, LS),
    "long_only": ({}, LONG),
    "top_k": ({}, LONG),
    "top_k short": ({"top_k_short": True}, LS),
    "top_k n_drop=0": ({"n_drop": 0}, [[1.0, 0.0]] * 3),  # never replaces its first holding
    "top_k short n_drop=0": ({"n_drop": 0, "top_k_short": True}, [[0.5, -0.5]] * 3),
    "top_k n_drop=1": ({"n_drop": 1}, LONG),
    "threshold": ({}, LONG),  # only |score| > 1.5 trades
    "proportional": ({}, LS),
    "sign": ({}, [[0.5, -0.5], [0.5, 0.5], [0.5, -0.5]]),
}


def frame(values: dict[str, list[float]], column: str) -> pl.DataFrame:
    rows = [
        {"symbol": s, "ts": DAY0 + dt.timedelta(days=i), column: v}
        for s, vs in values.items()
        for i, v in enumerate(vs)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


BARS = frame(CLOSES, "close").with_columns(open=pl.col("close"))


def backtest(strategy: str, **extra):
    cfg = BASE | {"strategy": strategy.split()[0]} | extra
    return run_backtest(frame(SCORES, "score"), BARS, cfg, 252)


def reference(targets: np.ndarray, returns: np.ndarray, fee: float = 0.0) -> np.ndarray:
    """The plain per-bar recursion (rebalance every row): trade to target at E_t, pay fee·|trade|."""
    held, net, out = np.zeros(targets.shape[1]), 0.0, []
    for t in range(targets.shape[0]):
        pre = held * (1 + returns[t - 1]) / (1 + net) if t else held
        cost = fee * np.abs(targets[t] - pre).sum()
        net = float(targets[t] @ returns[t]) - cost
        held = targets[t]
        out.append(net)
    return np.array(out)


def held(result) -> np.ndarray:
    w = result.weights.pivot(on="symbol", index="ts", values="weight").sort("ts").fill_null(0.0)
    return w.select(pl.col(c) if c in w.columns else pl.lit(0.0).alias(c) for c in ("A", "B")).to_numpy()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_strategy_positions_and_pnl_by_hand(name):
    extra, targets = EXPECTED[name]
    targets = np.array(targets)
    result = backtest(name, **extra)
    assert result.curve.height == 3  # bars 3 and 4 have no next-bar return to earn: no decision rows
    assert held(result) == pytest.approx(targets)
    # lag: row 0 earns A's 110/100 (bar 1 -> 2), never bar 0 -> 1 (flat)
    assert result.curve["gross"].to_list() == pytest.approx((targets * R).sum(axis=1))
    assert result.curve["net"].to_numpy() == pytest.approx(reference(targets, R))
    costly = backtest(name, cost_bps=100.0, **extra)
    assert costly.curve["net"].to_numpy() == pytest.approx(reference(targets, R, fee=0.01), rel=1e-12)


@pytest.mark.parametrize(
    ("extra", "held"),
    [
        ({"top_k": 2}, "all of them each date, equally weighted"),
        ({"top_k": 1, "top_k_short": True}, "the top and bottom 1 each date"),
        ({"top_k": 1}, None),
    ],
)
def test_a_top_k_that_holds_every_scored_symbol_says_so(tmp_path, extra, held):
    """top_k at least the universe is the equal-weight book (long and short halves with
    top_k_short), not a selection by score: the backtest says so in one notice."""
    from quant_cli.backtest.outputs import write_backtest
    from quant_cli.report import CollectingReporter

    reporter = CollectingReporter()
    write_backtest(tmp_path, frame(SCORES, "score"), BARS, BASE | {"strategy": "top_k"} | extra, 252, reporter=reporter)
    short = " with top_k_short" if extra.get("top_k_short") else ""
    expected = (
        [
            (
                "notice",
                f"backtest.top_k = {extra['top_k']}{short} but only 2 symbol(s) are scored: the book holds {held}; "
                "lower top_k to trade a selection by score",
            )
        ]
        if held
        else []
    )
    assert reporter.messages == expected


def test_long_only_costs_and_pnl_written_out():
    curve = backtest("long_only", cost_bps=100.0).curve
    # row 0 buys A (1.0): +10% - 1%; row 1 sells A, grown to 1.1 / 1.09 of the equity, buys B (1.0)
    sell_a = 1.1 / 1.09
    net1 = 0.10 - 0.01 * (sell_a + 1.0)
    sell_b = 1.1 / (1 + net1)
    assert curve["net"].to_list() == pytest.approx([0.09, net1, -0.01 * (sell_b + 1.0)])
    assert curve["turnover"].to_list() == pytest.approx([1.0, sell_a + 1.0, sell_b + 1.0])
    assert curve["equity"][-1] == pytest.approx(1.09 * (1 + net1) * (1 - 0.01 * (sell_b + 1.0)))


def test_slippage_minimum_and_borrow_costs():
    # Buying 1.0 of A fills 10 bps above the price and pays 20 bps commission on what was paid.
    first = backtest("long_only", cost_bps=20.0, slippage_bps=10.0).curve["cost"][0]
    assert first == pytest.approx(1.0 * 0.001 + 0.002 * 1.0 * 1.001)
    # A 50-currency minimum on a 10,000 book is 0.5% of the equity for the one trade of row 0.
    floor = backtest("long_only", cost_bps=1.0, min_trade_cost=50.0, capital=10_000.0).curve["cost"][0]
    assert floor == pytest.approx(50.0 / 10_000.0)
    # Borrow: 252% a year on 0.5 short is 1% x 0.5 per daily period, on every row held short.
    borrowed = backtest("long_short", borrow_bps=25_200.0).curve["cost"].to_list()
    assert borrowed == pytest.approx([0.005, 0.005, 0.005])


def test_results_before_costs_sit_beside_those_after():
    result = backtest("long_short", cost_bps=50.0)
    before = backtest("long_short").summary
    assert result.summary["before_costs"]["total_return"] == pytest.approx(before["total_return"])
    assert result.summary["total_return"] < before["total_return"]
    assert result.curve["equity_before_costs"].to_list() == pytest.approx(
        backtest("long_short").curve["equity"].to_list()
    )


def test_weights_are_traded_as_given():
    weights = frame({"A": [0.3, 0.3, -0.2], "B": [0.0, 0.6, 0.1]}, "weight")
    result = run_backtest(weights, BARS, BASE, 252, kind="weight")
    targets = np.array([[0.3, 0.0], [0.3, 0.6], [-0.2, 0.1]])
    assert held(result) == pytest.approx(targets)
    assert result.curve["net"].to_numpy() == pytest.approx(reference(targets, R))
    assert "ic" not in result.summary


def test_sparse_weights_are_held_and_earn_every_bar_in_between():
    # One target, given on bar 0 only: A is bought and held (drifting) through rows 1 and 2.
    result = run_backtest(frame({"A": [1.0]}, "weight"), BARS, BASE, 252, kind="weight")
    assert result.curve["net"].to_list() == pytest.approx([0.10, -0.10, 0.0])
    assert result.curve["turnover"].to_list() == pytest.approx([1.0, 0.0, 0.0])


def test_sizing_keeps_each_sides_gross():
    base = np.array([[0.25, 0.25, -0.25, -0.25]])
    vol = np.array([[0.01, 0.03, 0.02, 0.02]])
    sized = size(base, np.zeros((1, 4)), vol, "inverse_vol")
    assert sized[0] == pytest.approx([0.5 * 0.75, 0.5 * 0.25, -0.25, -0.25])  # 1/0.01 : 1/0.03 = 3 : 1
    scores = np.array([[3.0, 1.0, -1.0, -3.0]])  # mean 0: |score| 3 : 1 on each side
    assert size(base, scores, None, "score")[0] == pytest.approx([0.375, 0.125, -0.125, -0.375])
    no_vol = size(base, scores, np.full((1, 4), np.nan), "inverse_vol")
    assert no_vol[0] == pytest.approx([0.0] * 4)  # no trailing volatility yet: not held


def test_limits_clip_weights_then_net_then_gross():
    W = np.array([[0.6, 0.3, -0.1]])
    assert limit(W, {"max_weight": 0.4})[0] == pytest.approx([0.4, 0.3, -0.1])
    assert limit(W, {"max_net": 0.2})[0] == pytest.approx(
        [0.6 * 0.3 / 0.9, 0.3 * 0.3 / 0.9, -0.1]
    )  # longs shrink to 0.3
    assert limit(W, {"max_gross": 0.5})[0] == pytest.approx([0.3, 0.15, -0.05])
    assert limit(W, {})[0] == pytest.approx([0.6, 0.3, -0.1])  # gross 1.0 is within the default cap


def test_calendar_rebalance_is_the_last_bar_of_each_period():
    days = pl.Series([DAY0 + dt.timedelta(days=i) for i in range(40) if (DAY0 + dt.timedelta(days=i)).weekday() < 5])
    fridays = rebalance_rows(days, 1, "W-FRI")
    assert [d.weekday() for d, r in zip(days, fridays) if r][:-1] == [4] * 5  # every Friday (and the last bar)
    month_ends = [d.date().isoformat() for d, r in zip(days, rebalance_rows(days, 1, "M")) if r]
    assert month_ends == ["2020-01-31", "2020-02-14"]
    assert rebalance_rows(days, 5, None).nonzero()[0].tolist() == list(range(0, days.len(), 5))


def test_between_rebalances_positions_drift_and_nothing_trades():
    book = simulate(np.array([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]]), R, np.array([True, False, False]), Costs())
    assert book.held[1] == pytest.approx([0.55 / 1.05, 0.5 / 1.05])  # A grew 10%, the book 5%
    assert np.abs(book.traded[1:]).sum() == 0.0


@st.composite
def panels(draw):
    n_sym, n_bars = draw(st.integers(2, 4)), draw(st.integers(6, 12))
    prices = draw(st.lists(st.floats(50, 150), min_size=n_sym * n_bars, max_size=n_sym * n_bars))
    scores = draw(st.lists(st.floats(-1, 1), min_size=n_sym * n_bars, max_size=n_sym * n_bars))
    first = draw(st.integers(0, n_bars - 3))
    return np.array(prices).reshape(n_sym, n_bars), np.array(scores).reshape(n_sym, n_bars), first


def panel_frames(prices: np.ndarray, scores: np.ndarray, first: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    n_sym, n_bars = prices.shape
    rows = [
        {
            "symbol": f"S{i}",
            "ts": DAY0 + dt.timedelta(days=t),
            "close": prices[i, t],
            "open": prices[i, t],
            "score": scores[i, t] if t >= first else None,
        }
        for i in range(n_sym)
        for t in range(n_bars)
    ]
    bars = pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    return bars.drop("score"), bars.select("symbol", "ts", "score")


@settings(max_examples=40, deadline=None)
@given(
    panels(),
    st.sampled_from(["long_short", "top_k", "proportional", "sign"]),
    st.sampled_from(["next_close", "next_open"]),
)
def test_pnl_never_uses_a_price_from_before_the_fill(panel, strategy, execution):
    """Scores first exist at bar `first` (decided at its close). With the one-bar execution lag the
    first fill is at bar first+1, so every price up to and including bar `first` — the close that
    produced the score — must leave the whole equity curve unchanged. Filling at that same close
    (no lag) books the move from it, and this fails."""
    prices, scores, first = panel
    cfg = BASE | {"strategy": strategy, "execution": execution, "cost_bps": 10.0, "top_k": 1}
    bars, signal = panel_frames(prices, scores, first)
    moved = prices.copy()
    moved[:, : first + 1] *= np.random.default_rng(first).uniform(0.5, 1.5, size=(prices.shape[0], first + 1))
    bars_moved, _ = panel_frames(moved, scores, first)
    a = run_backtest(signal, bars, cfg, 252).curve
    b = run_backtest(signal, bars_moved, cfg, 252).curve
    assert a["ts"].to_list() == b["ts"].to_list()
    assert a["net"].to_numpy() == pytest.approx(b["net"].to_numpy(), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    panels(), st.sampled_from([{}, {"sizing": "inverse_vol", "vol_window": 2}, {"vol_target": 0.1, "vol_window": 2}])
)
def test_a_period_never_depends_on_a_later_price(panel, extra):
    """Net return of decision row t depends on prices up to bar t+2 (its fill and its mark) only:
    rewriting every later bar leaves rows 0..t unchanged, with causal sizing and the vol target."""
    prices, scores, _ = panel
    t = prices.shape[1] - 4
    cfg = BASE | {"strategy": "long_short", "cost_bps": 10.0} | extra
    bars, signal = panel_frames(prices, scores, 0)
    later = prices.copy()
    later[:, t + 3 :] *= 1.7
    a = run_backtest(signal, bars, cfg, 252).curve["net"].to_numpy()[: t + 1]
    b = run_backtest(signal, panel_frames(later, scores, 0)[0], cfg, 252).curve["net"].to_numpy()[: t + 1]
    assert a == pytest.approx(b, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(panels(), st.sampled_from([{"sizing": "inverse_vol", "vol_window": 2}, {"vol_target": 0.1, "vol_window": 2}]))
def test_a_decision_uses_only_bars_up_to_its_close(panel, extra):
    """The target decided at the close of bar t (causal volatility for sizing and the vol target)
    is unchanged when every bar after t is rewritten."""
    prices, scores, _ = panel
    t = prices.shape[1] - 4
    cfg = BASE | {"strategy": "long_short", "cost_bps": 10.0} | extra
    bars, signal = panel_frames(prices, scores, 0)
    later = prices.copy()
    later[:, t + 1 :] *= np.linspace(0.6, 1.8, later.shape[1] - t - 1)
    cut = DAY0 + dt.timedelta(days=t)

    def targets(b):
        w = run_backtest(signal, b, cfg, 252).weights.filter(pl.col("ts") <= cut)
        return w.sort("ts", "symbol")["target"].fill_null(0.0).to_numpy()

    assert targets(bars) == pytest.approx(targets(panel_frames(later, scores, 0)[0]), abs=1e-12)


RECIPE = """
[run]
name = "audit"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 4
bars = 400
[model]
name = "linear"
[train]
threads = 1
"""


@pytest.mark.parametrize("key", ["max_gross", "max_weight"])
def test_a_cap_that_forbids_every_position_is_a_recipe_error(runner, tmp_path, key):
    """Was exit 0 with a backtest that never traded (Sharpe nan) counted as a trial."""
    (tmp_path / "r.toml").write_text(RECIPE)
    result = runner.invoke(app, ["recipe", "show", "--recipe", str(tmp_path / "r.toml"), "--set", f"backtest.{key}=0"])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip().splitlines()[-1]
        == f"error: --set backtest.{key}=0: 'backtest.{key}' must be at least 0.001, got 0"
    )


# ---- a universe the strategy cannot trade (issue 18 §3) ------------------------------------------

ONE_SYMBOL_CFGS = {name: cfg for name, (cfg, _) in EXPECTED.items()} | {
    "long_only score sizing": {"sizing": "score"},
    "sign max_net=0": {"max_net": 0.0},
    "sign inverse_vol": {"sizing": "inverse_vol", "vol_window": 2},
    "sign max_net=0.5": {"max_net": 0.5},
}


@pytest.mark.parametrize("name", ONE_SYMBOL_CFGS)
def test_check_universe_refuses_exactly_the_books_that_hold_nothing_on_one_symbol(name):
    """The rule list in check_universe against the engine: on a one-symbol panel a configuration is
    refused if and only if the book it trades never holds a position (so a Sharpe would be NaN),
    or, two-sided, never holds its short side (top_k_short with n_drop keeps a half-gross long)."""
    cfg = BASE | {"strategy": name.split()[0]} | ONE_SYMBOL_CFGS[name]
    scores = frame({"A": [2.0, -1.0, 2.0, 1.0, 2.0]}, "score")
    weight = run_backtest(scores, BARS.filter(pl.col("symbol") == "A"), cfg, 252).weights["weight"]
    two_sided = cfg["strategy"] in ("long_short", "proportional") or cfg.get("top_k_short")
    holds = bool((weight.abs() > 0).any()) and not (two_sided and not (weight < 0).any())
    refused = None
    try:
        check_universe(with_defaults(cfg), *universe_of(scores))
    except RecipeError as exc:
        refused = str(exc)
    assert (refused is None) == holds, (name, refused, holds)


def test_a_long_short_book_on_one_symbol_is_refused_with_one_line_naming_what_can_trade_it():
    scores = frame({"EURUSD": [1.0, 2.0, 3.0]}, "score")
    with pytest.raises(RecipeError) as caught:
        check_universe(with_defaults({"strategy": "long_short"}), *universe_of(scores))
    assert str(caught.value) == (
        "backtest.strategy = 'long_short' needs at least 2 symbols scored at one timestamp, "
        "but the universe has 1 (EURUSD), so it would never hold a position; "
        "use a strategy that trades one symbol: 'sign', 'long_only', 'threshold' "
        "(e.g. --set backtest.strategy=sign), or add symbols to the dataset"
    )
    # two symbols that are never scored at the same timestamp are no cross-section either
    apart = pl.concat([frame({"A": [1.0]}, "score"), frame({"B": [0.0, 1.0]}, "score").filter(pl.col("ts") > DAY0)])
    with pytest.raises(RecipeError, match=r"the universe has 1 at once \(of 2: A, B\)"):
        check_universe(with_defaults({"strategy": "proportional"}), *universe_of(apart))
    check_universe(with_defaults({"strategy": "long_short"}), *universe_of(frame(SCORES, "score")))  # two: fine
