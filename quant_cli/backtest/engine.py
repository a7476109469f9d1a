"""A vectorised, next-bar-execution backtest of model scores.

Weights decided at the close of bar t earn the return from the execution price at t+1 to the
execution price at t+2 (next_open: opens, next_close: closes), the same price path the labels are
measured on. Costs are charged on turnover, |w_t - w_{t-1}| summed over symbols.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from quant_cli.dataset.labels import execution_price


def period_returns(bars: pl.DataFrame, execution: str) -> pl.DataFrame:
    """symbol, ts, ret: the one-bar return earned by a position decided at the close of ts."""
    price = execution_price(bars, execution)
    ret = price.shift(-2).over("symbol") / price.shift(-1).over("symbol") - 1.0
    return bars.sort("symbol", "ts").select("symbol", "ts", ret.alias("ret")).drop_nulls("ret")


def target_weights(scores: pl.DataFrame, strategy: str, quantile: float) -> pl.DataFrame:
    """symbol, ts, weight with gross exposure 1 at each timestamp (0 when nothing can be held)."""
    n = pl.len().over("ts")
    if strategy == "sign":
        weight = pl.col("score").sign() / n
    else:
        k = (n.cast(pl.Float64) * quantile).floor().clip(lower_bound=1.0)
        rank = pl.col("score").rank("ordinal").over("ts")
        long = rank > n - k
        short = rank <= k
        weight = (
            pl.when(n < 2).then(0.0)
            .when(long).then(0.5 / k)
            .when(short).then(-0.5 / k)
            .otherwise(0.0)
        )
    return scores.select("symbol", "ts", weight.cast(pl.Float64).alias("weight"))


def hold_between_rebalances(weights: pl.DataFrame, every: int) -> pl.DataFrame:
    """Recompute weights only on every `every`-th timestamp; hold them in between.

    A symbol without a score on a rebalance date is flat until the next one.
    """
    if every <= 1:
        return weights
    dates = weights.select(pl.col("ts").unique().sort()).with_row_index("i")
    grid = dates.select("ts", (pl.col("i") % every == 0).alias("rebalance"))
    held = weights.join(grid, on="ts").with_columns(
        pl.when(pl.col("rebalance")).then(pl.col("weight")).otherwise(None).forward_fill().over("symbol").fill_null(0.0).alias("weight")
    )
    return held.select("symbol", "ts", "weight")


def run_backtest(scores: pl.DataFrame, bars: pl.DataFrame, cfg: dict[str, Any], periods_per_year: float) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Returns the per-period equity curve and summary metrics."""
    weights = target_weights(scores.sort("symbol", "ts"), cfg["strategy"], cfg["quantile"])
    weights = hold_between_rebalances(weights.sort("symbol", "ts"), cfg.get("rebalance_every", 1))
    book = weights.join(period_returns(bars, cfg["execution"]), on=["symbol", "ts"], how="inner")
    book = book.sort("symbol", "ts").with_columns(
        (pl.col("weight") - pl.col("weight").shift(1).over("symbol").fill_null(0.0)).abs().alias("trade")
    )
    curve = (
        book.group_by("ts")
        .agg((pl.col("weight") * pl.col("ret")).sum().alias("gross"), pl.col("trade").sum().alias("turnover"))
        .sort("ts")
        .with_columns((pl.col("turnover") * cfg["cost_bps"] / 1e4).alias("cost"))
        .with_columns((pl.col("gross") - pl.col("cost")).alias("net"))
        .with_columns((1.0 + pl.col("net")).cum_prod().alias("equity"))
    )
    return curve, summarize(curve, periods_per_year)


def summarize(curve: pl.DataFrame, periods_per_year: float) -> dict[str, Any]:
    n = curve.height
    if n == 0:
        return {"periods": 0}
    net = curve["net"]
    std = net.std() or 0.0
    final = float(curve["equity"][-1])
    drawdown = (curve["equity"] / curve["equity"].cum_max() - 1.0).min()
    return {
        "periods": n,
        "start": curve["ts"][0].isoformat(),
        "end": curve["ts"][-1].isoformat(),
        "total_return": final - 1.0,
        "annual_return": final ** (periods_per_year / n) - 1.0 if final > 0 else -1.0,
        "annual_volatility": std * math.sqrt(periods_per_year),
        "sharpe": float(net.mean()) / std * math.sqrt(periods_per_year) if std > 0 else float("nan"),
        "max_drawdown": float(drawdown),
        "hit_rate": float((net > 0).mean()),
        "mean_turnover": float(curve["turnover"].mean()),
        "total_cost": float(curve["cost"].sum()),
        "periods_per_year": periods_per_year,
    }
