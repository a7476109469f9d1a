"""Issue 20 §4: backtest results by market regime, on a planted two-regime panel."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.backtest.engine import run_backtest
from quant_cli.backtest.outputs import write_backtest
from quant_cli.backtest.panel import period_returns
from quant_cli.backtest.regimes import market_regimes

CFG = {"strategy": "long_short", "quantile": 0.5, "cost_bps": 0.0, "execution": "next_close"}
BLOCK = 150  # bars per regime block: calm, turbulent, calm, turbulent, ...


def planted_panel(blocks: int = 6, symbols: int = 6, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """(bars, turbulent (T,) bool): every symbol's daily volatility is 0.5% in calm blocks, 4% in turbulent ones."""
    rng = np.random.default_rng(seed)
    turbulent = np.repeat(np.arange(blocks) % 2 == 1, BLOCK)
    sigma = np.where(turbulent, 0.04, 0.005)
    start = dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)
    ts = [start + dt.timedelta(days=i) for i in range(len(sigma))]
    frames = []
    for s in range(symbols):
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma)))
        frames.append(pl.DataFrame({"symbol": f"S{s}", "ts": ts, "open": close, "close": close}))
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))), turbulent


def foresight_in_turbulence(bars: pl.DataFrame, turbulent: np.ndarray) -> pl.DataFrame:
    """Scores that know the next period's return in turbulent blocks and are noise in calm ones."""
    returns = period_returns(bars, "next_close")
    calendar = bars["ts"].unique().sort()
    wild = pl.DataFrame({"ts": calendar, "wild": turbulent})
    noise = pl.Series(np.random.default_rng(1).normal(size=returns.height))
    return (
        returns.join(wild, on="ts")
        .with_columns(noise.alias("noise"))
        .select("symbol", "ts", pl.when("wild").then(pl.col("ret")).otherwise(pl.col("noise")).alias("score"))
    )


def test_market_regime_finds_the_planted_turbulence() -> None:
    bars, turbulent = planted_panel()
    regimes = market_regimes(bars)
    labels = regimes["regime"].to_numpy()
    known = labels != "unknown"
    assert known[100:].all() and not known[:60].any()  # at least 60 volatilities ranked, never before
    # Well inside each block (after the 20-bar volatility caught up), turbulence is "high", calm is not.
    inside = np.zeros(len(labels), bool)
    for b in range(2, len(turbulent) // BLOCK):
        inside[b * BLOCK + 30 : (b + 1) * BLOCK] = True
    assert (labels[inside & turbulent[1:]] == "high").mean() > 0.6
    assert (labels[inside & ~turbulent[1:]] == "high").mean() < 0.05


@pytest.mark.parametrize("cut", [200, 380, 500, 700])  # calm and turbulent blocks
def test_market_regime_at_t_ignores_bars_after_t(cut: int) -> None:
    bars, _ = planted_panel()
    t = bars["ts"].unique().sort()[cut]
    rng = np.random.default_rng(cut)
    noise = pl.Series(np.exp(rng.normal(0.0, 0.2, bars.height)))
    rewritten_close = pl.when(pl.col("ts") > t).then(pl.col("close") * noise).otherwise(pl.col("close"))
    later = bars.with_columns(rewritten_close.alias("close"))
    early, rewritten = (market_regimes(b).filter(pl.col("ts") <= t) for b in (bars, later))
    assert early["percentile"].null_count() < early.height
    assert early.equals(rewritten)


def test_by_regime_breaks_the_backtest_down_and_the_edge_shows_where_it_was_planted() -> None:
    bars, turbulent = planted_panel()
    result = run_backtest(foresight_in_turbulence(bars, turbulent), bars, CFG, 252)
    regimes = result.summary["by_regime"]
    assert set(regimes) == {"low", "normal", "high", "unknown"}
    assert math.isclose(sum(r["share"] for r in regimes.values()), 1.0)
    assert sum(r["periods"] for r in regimes.values()) == result.curve.height
    assert regimes["high"]["sharpe"] > 5 and regimes["high"]["hit_rate"] > 0.8
    assert abs(regimes["low"]["sharpe"]) < regimes["high"]["sharpe"] / 3
    # Each regime's numbers are those of its own periods of the curve.
    labelled = result.curve.join(market_regimes(bars), on="ts", how="left")
    high = labelled.filter(pl.col("regime") == "high")["net"].to_numpy()
    assert math.isclose(regimes["high"]["total_return"], float(np.prod(1 + high) - 1), rel_tol=1e-12)
    assert math.isclose(regimes["high"]["sharpe"], high.mean() / high.std(ddof=1) * math.sqrt(252), rel_tol=1e-12)


def test_metrics_json_and_report_carry_the_regime_breakdown(tmp_path: Path) -> None:
    bars, turbulent = planted_panel()
    folder = tmp_path / "backtest"
    folder.mkdir()
    write_backtest(folder, foresight_in_turbulence(bars, turbulent), bars, CFG, periods_per_year=252)
    metrics = json.loads((folder / "metrics.json").read_text())
    keys = {"periods", "share", "mean_return", "total_return", "sharpe", "hit_rate"}
    assert set(metrics["by_regime"]["high"]) == keys
    report = (folder / "report.html").read_text()
    assert "By market regime" in report and "<td>high</td>" in report
