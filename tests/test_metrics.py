"""Every metric against a hand computation on a tiny series (numpy, written out independently):
prediction metrics (IC, rank IC, ICIR, pooled vs cross-sectional, errors), classification metrics
and the backtest summary (returns, volatility, Sharpe, Sortino, drawdown, turnover, costs)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from quant_cli.backtest.metrics import classification_metrics, prediction_metrics, summarize

NAN = float("nan")
DAY0 = dt.datetime(2021, 1, 4, tzinfo=dt.timezone.utc)


def preds(rows: list[tuple[str, int, float | None, float | None]]) -> pl.DataFrame:
    """(symbol, day, score, label) rows."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "ts": [DAY0 + dt.timedelta(days=r[1]) for r in rows],
            "score": [r[2] for r in rows],
            "label": [r[3] for r in rows],
        },
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "score": pl.Float64, "label": pl.Float64},
    )


def pearson(x, y) -> float:
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


def average_ranks(x) -> np.ndarray:
    """1-based ranks, ties given the mean of the places they occupy."""
    x = np.asarray(x, float)
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


# Two timestamps, five symbols (the fewest a cross-section counts with); day 1 has a tie in the scores.
DAY_SCORES = {
    0: ([0.1, 0.3, 0.2, 0.0, 0.4], [0.01, 0.03, -0.02, 0.0, 0.01]),
    1: ([0.5, 0.5, -0.1, 0.2, 0.1], [0.02, -0.01, 0.00, 0.01, -0.03]),
}


def two_day_panel() -> pl.DataFrame:
    return preds(
        [(s, d, sc, lb) for d, (scores, labels) in DAY_SCORES.items() for s, sc, lb in zip("ABCDE", scores, labels)]
    )


def test_ic_rank_ic_and_icir_are_means_of_per_timestamp_correlations():
    m = prediction_metrics(two_day_panel())
    ics = [pearson(s, lab) for s, lab in DAY_SCORES.values()]
    rank_ics = [pearson(average_ranks(s), average_ranks(lab)) for s, lab in DAY_SCORES.values()]
    assert m["ic_kind"] == "cross_sectional"
    assert m["ic"] == pytest.approx(np.mean(ics))
    assert m["rank_ic"] == pytest.approx(np.mean(rank_ics))
    assert m["icir"] == pytest.approx(np.mean(ics) / np.std(ics, ddof=1))


def test_error_measures_by_hand():
    scores = np.concatenate([s for s, _ in DAY_SCORES.values()])
    labels = np.concatenate([lab for _, lab in DAY_SCORES.values()])
    m = prediction_metrics(two_day_panel())
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((scores - labels) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(scores - labels)))
    assert m["hit_rate"] == pytest.approx(np.mean(np.sign(scores) == np.sign(labels)))
    assert (m["rows"], m["symbols"], m["timestamps"], m["unscored"]) == (10, 5, 2, 0)


def test_fewer_than_five_symbols_pool_the_ic_and_say_so():
    # Three symbols: every per-timestamp correlation is one of a handful of values near +-1, so the
    # IC is the pooled (time-series) correlation over all rows instead, and ic_kind says so.
    rng = np.random.default_rng(3)
    rows = [(s, d, float(rng.normal()), float(rng.normal())) for d in range(30) for s in "ABC"]
    m = prediction_metrics(preds(rows))
    assert m["ic_kind"] == "pooled" and math.isnan(m["icir"])
    assert m["ic"] == pytest.approx(pearson([r[2] for r in rows], [r[3] for r in rows]))
    # A timestamp with 4 scored symbols does not count toward a cross-sectional IC either.
    five = two_day_panel()
    thin = five.filter(~((pl.col("ts") == DAY0) & (pl.col("symbol") == "E")))
    assert prediction_metrics(thin)["ic"] == pytest.approx(pearson(*DAY_SCORES[1]))


def test_single_symbol_falls_back_to_pooled_correlation():
    scores, labels = [0.1, 0.4, 0.2, 0.3], [0.0, 0.02, 0.03, -0.01]
    m = prediction_metrics(preds([("A", d, s, lab) for d, (s, lab) in enumerate(zip(scores, labels))]))
    assert m["ic_kind"] == "pooled"
    assert m["ic"] == pytest.approx(pearson(scores, labels))
    assert m["rank_ic"] == pytest.approx(pearson(average_ranks(scores), average_ranks(labels)))
    assert math.isnan(m["icir"])


def test_a_nan_or_null_score_is_not_scored_and_never_ranks_first():
    # With the NaN ranked highest, rank IC on day 0 would be pearson([4,1,2,3], [4,2,3,1]) = 0.4.
    rows = [("A", 0, NAN, 0.04), ("B", 0, 1.0, 0.02), ("C", 0, 2.0, 0.03), ("D", 0, 3.0, 0.01), ("E", 0, None, 0.05)]
    m = prediction_metrics(preds(rows))
    assert m["rank_ic"] == pytest.approx(pearson([1, 2, 3], [2, 3, 1]))  # -0.5: only the scored rows
    assert m["ic"] == pytest.approx(pearson([1.0, 2.0, 3.0], [0.02, 0.03, 0.01]))
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((np.array([1.0, 2, 3]) - [0.02, 0.03, 0.01]) ** 2)))
    assert (m["rows"], m["unscored"]) == (5, 2)


def test_rank_ic_ranks_ties_by_average_not_by_symbol():
    # Swapping the names of two tied symbols must not change the rank IC.
    rows = [("A", 0, 1.0, 0.03), ("B", 0, 1.0, 0.01), ("C", 0, 0.0, 0.02)]
    swapped = [("B", 0, 1.0, 0.03), ("A", 0, 1.0, 0.01), ("C", 0, 0.0, 0.02)]
    expected = pearson(average_ranks([1.0, 1.0, 0.0]), average_ranks([0.03, 0.01, 0.02]))
    assert prediction_metrics(preds(rows))["rank_ic"] == pytest.approx(expected)
    assert prediction_metrics(preds(swapped))["rank_ic"] == pytest.approx(expected)


# ---- classification ------------------------------------------------------------------------------


def proba_frame(labels, proba, classes) -> pl.DataFrame:
    frame = preds([("A", i, 0.0, lab) for i, lab in enumerate(labels)])
    return frame.with_columns(pl.Series(f"p_{c:g}", np.asarray(proba)[:, j]) for j, c in enumerate(classes))


def auc_by_pairs(positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties one half (Mann-Whitney)."""
    pos, neg = score[positive], score[~positive]
    return float(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))


def test_binary_accuracy_log_loss_and_auc_by_hand():
    labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    p1 = np.array([0.2, 0.7, 0.4, 0.4, 0.9])
    m = classification_metrics(proba_frame(labels, np.column_stack([1 - p1, p1]), [0.0, 1.0]))
    assert m["accuracy"] == pytest.approx(np.mean((p1 > 0.5) == (labels == 1)))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(np.where(labels == 1, p1, 1 - p1))))
    assert m["auc"] == pytest.approx(auc_by_pairs(labels == 1, p1))  # a tie at 0.4 counts one half


def test_three_class_auc_is_the_macro_mean_over_the_classes_present():
    classes = [-1.0, 0.0, 1.0]
    labels = np.array([-1.0, 0.0, 1.0, 1.0, -1.0, 0.0])
    proba = np.array(
        [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4], [0.4, 0.4, 0.2], [0.5, 0.3, 0.2]]
    )
    m = classification_metrics(proba_frame(labels, proba, classes))
    expected = np.mean([auc_by_pairs(labels == c, proba[:, j]) for j, c in enumerate(classes)])
    assert m["auc"] == pytest.approx(expected)
    assert m["accuracy"] == pytest.approx(np.mean(np.array(classes)[proba.argmax(axis=1)] == labels))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(6), [classes.index(v) for v in labels]])))
    # Class 1 absent from a segment: the AUC is the mean over -1 and 0, not NaN.
    keep = labels != 1.0
    part = classification_metrics(proba_frame(labels[keep], proba[keep], classes))
    assert part["auc"] == pytest.approx(
        np.mean([auc_by_pairs(labels[keep] == c, proba[keep][:, j]) for j, c in enumerate(classes[:2])])
    )


def test_auc_needs_both_outcomes():
    m = classification_metrics(proba_frame([1.0, 1.0], [[0.3, 0.7], [0.6, 0.4]], [0.0, 1.0]))
    assert math.isnan(m["auc"]) and m["accuracy"] == pytest.approx(0.5)


# ---- backtest summary ----------------------------------------------------------------------------


def curve_of(net: list[float], turnover: list[float] | None = None, cost: list[float] | None = None) -> pl.DataFrame:
    n = len(net)
    return pl.DataFrame(
        {
            "ts": [DAY0 + dt.timedelta(days=i) for i in range(n)],
            "net": net,
            "turnover": turnover or [0.0] * n,
            "cost": cost or [0.0] * n,
            "equity": np.cumprod(1.0 + np.asarray(net)).tolist(),
        }
    )


NET = [0.01, -0.02, 0.015, 0.005, -0.01, 0.02]
PPY = 252


def test_returns_volatility_sharpe_and_sortino_by_hand():
    r = np.asarray(NET)
    s = summarize(curve_of(NET), PPY)
    final = float(np.prod(1 + r))
    assert s["periods"] == 6
    assert s["total_return"] == pytest.approx(final - 1)
    assert s["annual_return"] == pytest.approx(final ** (PPY / 6) - 1)
    assert s["annual_volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(PPY))
    # The square root of the periods per year: annualising by 252 itself would be ~16x too large.
    assert s["sharpe"] == pytest.approx(r.mean() / np.std(r, ddof=1) * math.sqrt(PPY))
    downside = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert s["sortino"] == pytest.approx(r.mean() / downside * math.sqrt(PPY))
    assert s["hit_rate"] == pytest.approx(4 / 6)


def test_sharpe_scales_with_the_square_root_of_the_periods_per_year():
    daily, weekly = summarize(curve_of(NET), 252), summarize(curve_of(NET), 52)
    assert daily["sharpe"] / weekly["sharpe"] == pytest.approx(math.sqrt(252 / 52))


def test_max_drawdown_is_the_worst_fall_from_a_running_peak():
    net = [0.10, -0.05, -0.10, 0.20, -0.30]
    equity = np.cumprod(1 + np.asarray(net))  # 1.1, 1.045, 0.9405, 1.1286, 0.79002
    assert summarize(curve_of(net), PPY)["max_drawdown"] == pytest.approx(equity[-1] / equity[-2] - 1)
    assert summarize(curve_of(net[:3]), PPY)["max_drawdown"] == pytest.approx(0.9405 / 1.1 - 1)


def test_max_drawdown_counts_the_starting_capital():
    assert summarize(curve_of([-0.10, 0.05]), PPY)["max_drawdown"] == pytest.approx(-0.10)
    assert summarize(curve_of([-0.10, -0.10]), PPY)["max_drawdown"] == pytest.approx(0.81 - 1)
    assert summarize(curve_of([0.01, 0.02]), PPY)["max_drawdown"] == 0.0


def test_turnover_and_cost_totals():
    s = summarize(curve_of([0.0, 0.01, 0.0], turnover=[1.0, 0.5, 0.0], cost=[1e-4, 5e-5, 0.0]), PPY)
    assert s["mean_turnover"] == pytest.approx(0.5)
    assert s["total_cost"] == pytest.approx(1.5e-4)


def test_degenerate_series_give_nan_ratios_not_errors():
    flat = summarize(curve_of([0.0, 0.0, 0.0]), PPY)
    assert math.isnan(flat["sharpe"]) and math.isnan(flat["sortino"]) and flat["annual_volatility"] == 0.0
    gains = summarize(curve_of([0.01, 0.02]), PPY)
    assert math.isnan(gains["sortino"]) and gains["sharpe"] > 0  # no downside: Sortino undefined
    assert summarize(curve_of([0.01]), PPY)["annual_volatility"] == 0.0
    assert summarize(curve_of([-1.0, 0.0]), PPY)["annual_return"] == -1.0  # the equity is gone
    assert summarize(curve_of([]), PPY) == {"periods": 0}
