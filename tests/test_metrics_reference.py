"""Our portfolio metrics against empyrical-reloaded and quantstats where the definitions match,
and the documented places where they intentionally differ (test-only dependencies)."""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quant_cli.backtest.metrics import summarize

empyrical = pytest.importorskip("empyrical")
qs = pytest.importorskip("quantstats")

PPY = 252
N = 300


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(5)
    r = rng.normal(0.0005, 0.01, N)
    b = 0.5 * r + rng.normal(0, 0.008, N)
    ts = [dt.datetime(2021, 1, 4, tzinfo=dt.timezone.utc) + dt.timedelta(days=i) for i in range(N)]
    curve = pl.DataFrame(
        {
            "ts": ts,
            "net": r,
            "equity": np.cumprod(1 + r),
            "turnover": np.zeros(N),
            "cost": np.zeros(N),
            "exposure": np.ones(N),
            "net_exposure": np.ones(N),
            "benchmark": b,
        }
    )
    index = pd.date_range("2021-01-04", periods=N, freq="D")
    return summarize(curve, PPY), pd.Series(r, index=index), pd.Series(b, index=index)


def test_matches_empyrical(series):
    ours, r, b = series
    assert ours["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=PPY), rel=1e-10)
    assert ours["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=PPY), rel=1e-10)
    assert ours["annual_volatility"] == pytest.approx(empyrical.annual_volatility(r, annualization=PPY), rel=1e-10)
    assert ours["annual_return"] == pytest.approx(empyrical.annual_return(r, annualization=PPY), rel=1e-10)
    assert ours["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
    assert ours["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=PPY), rel=1e-10)
    assert ours["omega"] == pytest.approx(empyrical.omega_ratio(r, annualization=PPY), rel=1e-10)
    assert ours["tail_ratio"] == pytest.approx(empyrical.tail_ratio(r), rel=1e-10)
    assert ours["beta"] == pytest.approx(empyrical.beta(r, b), rel=1e-10)
    assert ours["var_95"] == pytest.approx(empyrical.value_at_risk(r, 0.05), rel=1e-10)
    assert ours["cvar_95"] == pytest.approx(empyrical.conditional_value_at_risk(r, 0.05), rel=1e-10)


def test_matches_quantstats(series):
    ours, r, _ = series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["sharpe"] == pytest.approx(qs.stats.sharpe(r, periods=PPY), rel=1e-10)
        assert ours["sortino"] == pytest.approx(qs.stats.sortino(r, periods=PPY), rel=1e-10)
        assert ours["annual_volatility"] == pytest.approx(qs.stats.volatility(r, periods=PPY), rel=1e-10)
        assert ours["annual_return"] == pytest.approx(qs.stats.cagr(r, periods=PPY), rel=1e-10)
        assert ours["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(r), rel=1e-10)
        assert ours["hit_rate"] == pytest.approx(qs.stats.win_rate(r), rel=1e-10)  # no flat periods here
        assert ours["tail_ratio"] == pytest.approx(qs.stats.tail_ratio(r), rel=1e-10)


def test_where_we_intentionally_differ(series):
    """alpha: ours is arithmetic, (mean(r) − β·mean(b))·ppy; empyrical compounds the daily alpha,
    (1 + α)^ppy − 1. kurtosis: ours is RAW (the PSR needs it; normal = 3); quantstats reports
    pandas' bias-corrected EXCESS kurtosis (normal = 0), and a bias-corrected skew. profit_factor:
    ours sums currency PnL r·E; quantstats sums returns, which makes it omega at threshold 0.
    information_ratio: ours is annualised; quantstats' is per period."""
    ours, r, b = series
    daily = r.mean() - ours["beta"] * b.mean()
    assert ours["alpha"] == pytest.approx(daily * PPY, rel=1e-10)
    assert empyrical.alpha(r, b, annualization=PPY) == pytest.approx((1 + daily) ** PPY - 1, rel=1e-8)
    from scipy.stats import kurtosis, skew

    assert ours["kurtosis"] == pytest.approx(kurtosis(r, fisher=False), rel=1e-10)
    assert ours["skew"] == pytest.approx(skew(r), rel=1e-10)
    assert ours["kurtosis"] - 3 == pytest.approx(qs.stats.kurtosis(r), abs=0.1)  # excess, bias-corrected
    assert ours["information_ratio"] / math.sqrt(PPY) == pytest.approx(qs.stats.information_ratio(r, b), rel=1e-10)
    assert qs.stats.profit_factor(r) == pytest.approx(ours["omega"], rel=1e-10)
    pnl = r.to_numpy() * np.concatenate([[1.0], np.cumprod(1 + r.to_numpy())[:-1]])
    assert ours["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum(), rel=1e-10)
