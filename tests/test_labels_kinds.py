"""Label kinds against slow, obviously-correct references; sample weights by hand."""

import math

import numpy as np
import polars as pl
import pytest

from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import cross_sectional, direction, forward_return, make_labels, triple_barrier
from quant_cli.dataset.weights import average_uniqueness, sample_weights
from quant_cli.recipe import load_recipe


def label_cfg(**overrides):
    return load_recipe(None)["label"] | overrides


def slow_ewm_std(log_ret, span):
    """pandas-style ewm std (adjust=False, bias-corrected) written as a plain loop."""
    alpha = 2 / (span + 1)
    out = [math.nan] * len(log_ret)
    mean = var = None
    sum_w = sum_w2 = 0.0
    for i, x in enumerate(log_ret):
        if math.isnan(x):
            continue
        if mean is None:
            mean, var, sum_w, sum_w2, count = x, 0.0, 1.0, 1.0, 1
        else:
            old = mean
            mean = (1 - alpha) * mean + alpha * x
            var = (1 - alpha) * (var + alpha * (x - old) ** 2)
            sum_w, sum_w2, count = (1 - alpha) * sum_w + alpha, (1 - alpha) ** 2 * sum_w2 + alpha**2, count + 1
        if count >= span:
            out[i] = math.sqrt(var * sum_w**2 / (sum_w**2 - sum_w2))
    return out


def slow_triple_barrier(close, ts, horizon, pt, sl, span, vertical, price=None):
    """`price`: the execution price path (open for next_open); volatility always from close."""
    price = close if price is None else price
    log_ret = [math.nan] + [math.log(close[i] / close[i - 1]) for i in range(1, len(close))]
    vol = slow_ewm_std(log_ret, span)
    rows = []
    for t in range(len(close)):
        if t + 1 + horizon >= len(close) or math.isnan(vol[t]):
            continue
        entry = price[t + 1]
        label, end = None, None
        for k in range(1, horizon + 1):
            r = price[t + 1 + k] / entry - 1
            if (pt > 0 and r >= pt * vol[t]) or (sl > 0 and r <= -sl * vol[t]):
                label, end = float(np.sign(r)), ts[t + 1 + k]
                break
        if label is None:
            r = price[t + 1 + horizon] / entry - 1
            label, end = (0.0 if vertical == "zero" else float(np.sign(r))), ts[t + 1 + horizon]
        rows.append((ts[t], label, end))
    return rows


@pytest.mark.parametrize("horizon", [1, 5, 12])
@pytest.mark.parametrize(("pt", "sl"), [(1.0, 1.0), (2.0, 0.5), (0.0, 1.0), (1.5, 0.0)])
@pytest.mark.parametrize("vertical", ["sign", "zero"])
@pytest.mark.parametrize("execution", ["next_close", "next_open"])
def test_triple_barrier_matches_slow_reference(horizon, pt, sl, vertical, execution):
    bars = generate(symbols=2, bars=120, seed=3)
    cfg = label_cfg(
        kind="triple_barrier", horizon=horizon, profit_take=pt, stop_loss=sl, vol_span=10, vertical=vertical
    )
    fast = triple_barrier(bars, cfg, execution)
    for symbol in ("S000", "S001"):
        one = bars.filter(pl.col("symbol") == symbol)
        price = one["open" if execution == "next_open" else "close"].to_list()
        expected = slow_triple_barrier(
            one["close"].to_list(), one["ts"].to_list(), horizon, pt, sl, 10, vertical, price
        )
        got = fast.filter(pl.col("symbol") == symbol)
        assert got["ts"].to_list() == [e[0] for e in expected]
        assert got["label"].to_list() == [e[1] for e in expected]
        assert got["t1"].to_list() == [e[2] for e in expected]


def test_triple_barrier_t1_is_never_before_the_fill(small_panel):
    labels = triple_barrier(small_panel, label_cfg(kind="triple_barrier", horizon=10), "next_close")
    nxt = small_panel.select("symbol", "ts", pl.col("ts").shift(-2).over("symbol").alias("first_check"))
    joined = labels.join(nxt, on=["symbol", "ts"])
    assert (joined["t1"] >= joined["first_check"]).all()
    assert set(labels["label"].unique()) <= {-1.0, 0.0, 1.0}


def test_direction_dead_zone(small_panel):
    raw = forward_return(small_panel, 3, "next_close")
    labels = direction(small_panel, 3, "next_close", threshold=0.01)
    expected = np.where(raw["label"] > 0.01, 1.0, np.where(raw["label"] < -0.01, -1.0, 0.0))
    np.testing.assert_array_equal(labels["label"].to_numpy(), expected)
    assert labels["t1"].equals(raw["t1"])


def test_cross_sectional_rank_and_zscore(small_panel):
    raw = forward_return(small_panel, 1, "next_close")
    ranked = cross_sectional(raw, "rank")
    by_ts = ranked.group_by("ts").agg(pl.col("label").min().alias("lo"), pl.col("label").max().alias("hi"))
    assert (by_ts["lo"] == -0.5).all() and (by_ts["hi"] == 0.5).all()
    z = (
        cross_sectional(raw, "zscore")
        .group_by("ts")
        .agg(pl.col("label").mean().alias("m"), pl.col("label").std().alias("s"))
    )
    assert z["m"].abs().max() < 1e-12 and (z["s"] - 1).abs().max() < 1e-9


def test_vol_scaled_label_divides_by_vol_known_at_t(small_panel):
    scaled = make_labels(small_panel, label_cfg(vol_scale=True, vol_span=10, horizon=4), "next_close")
    raw = forward_return(small_panel, 4, "next_close")
    one = small_panel.filter(pl.col("symbol") == "S000")
    log_ret = [math.nan] + np.diff(np.log(one["close"].to_numpy())).tolist()
    vol = dict(zip(one["ts"].to_list(), slow_ewm_std(log_ret, 10)))
    got = scaled.filter(pl.col("symbol") == "S000").join(raw, on=["symbol", "ts"], suffix="_raw")
    expected = [r / (vol[t] * 2.0) for t, r in zip(got["ts"], got["label_raw"])]
    np.testing.assert_allclose(got["label"].to_numpy(), expected, rtol=1e-9)


def test_average_uniqueness_by_hand():
    # one symbol, bars 0..5; labels [0,2], [1,3], [4,5]: bars 1 and 2 are shared by two labels
    import datetime as dt

    ts = [dt.datetime(2020, 1, d + 1, tzinfo=dt.timezone.utc) for d in range(6)]
    calendar = pl.DataFrame({"symbol": ["A"] * 6, "ts": ts})
    rows = pl.DataFrame({"symbol": ["A"] * 3, "ts": [ts[0], ts[1], ts[4]], "t1": [ts[2], ts[3], ts[5]]})
    u = average_uniqueness(rows, calendar)
    np.testing.assert_allclose(u, [(1 + 0.5 + 0.5) / 3, (0.5 + 0.5 + 1) / 3, 1.0])
    w = sample_weights(rows, calendar, "uniqueness", 1.0)
    assert w.mean() == pytest.approx(1.0) and w[2] > w[0]
    decayed = sample_weights(rows, calendar, "none", 0.0)
    assert decayed[0] < decayed[1] < decayed[2]
    assert sample_weights(rows, calendar, "none", 1.0) is None
