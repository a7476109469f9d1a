"""A vectorised, next-bar-execution backtest of model scores.

Weights decided at the close of bar t earn the return from the execution price at t+1 to the
execution price at t+2 (next_open: opens, next_close: closes), the same price path the labels are
measured on. Costs are charged on turnover, |w_t - w_{t-1}| summed over symbols.

Weights live on the full grid of scored timestamps x scored symbols, a symbol without a score
weighing 0: a symbol that drops out of the scores is closed and costed, and one missing on a
rebalance date is flat until the next rebalance (never handed its older weight back).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from quant_cli.dataset.labels import execution_price


def period_returns(bars: pl.DataFrame, execution: str) -> pl.DataFrame:
    """symbol, ts, ret: the one-bar return earned by a position decided at the close of ts."""
    price = execution_price(bars, execution)
    ret = price.shift(-2).over("symbol") / price.shift(-1).over("symbol") - 1.0
    return bars.sort("symbol", "ts").select("symbol", "ts", ret.alias("ret")).drop_nulls("ret")


def target_weights(scores: pl.DataFrame, strategy: str, quantile: float) -> pl.DataFrame:
    """symbol, ts, weight with gross exposure 1 at each timestamp (0 when nothing can be held).

    Only finite scores take part: a NaN or null score gets weight 0 and is not counted in n (polars
    ranks NaN above every number, so it would otherwise be bought first).
      sign:       w = sign(score) / n
      long_short: k = max(1, floor(n * quantile)); the top k scores are long 0.5 / k each, the bottom
                  k short 0.5 / k. A group of tied scores spanning ordinal places lo..hi shares the
                  places it has in each bucket equally, so ties never fall to the symbol's name:
                  w = 0.5 / k * (|[lo, hi] ∩ top k| - |[lo, hi] ∩ bottom k|) / (hi - lo + 1).
    """
    finite = pl.col("score").cast(pl.Float64).is_finite().fill_null(False)
    score = pl.when(finite).then(pl.col("score").cast(pl.Float64))
    n = finite.sum().over("ts")
    if strategy == "sign":
        weight = score.sign() / n
    else:
        k = (n.cast(pl.Float64) * quantile).floor().clip(lower_bound=1.0)
        lo, hi = score.rank("min").over("ts"), score.rank("max").over("ts")
        in_top = (hi - pl.max_horizontal(lo - 1, n - k)).clip(lower_bound=0)
        in_bottom = (pl.min_horizontal(hi, k) - (lo - 1)).clip(lower_bound=0)
        weight = pl.when(n < 2).then(0.0).otherwise(0.5 / k * (in_top - in_bottom) / (hi - lo + 1))
    return scores.select("symbol", "ts", weight.fill_null(0.0).cast(pl.Float64).alias("weight"))


def on_full_grid(weights: pl.DataFrame) -> pl.DataFrame:
    """Every (ts, symbol) pair of the scored timestamps and symbols; a pair with no score weighs 0.

    Trades are differences along this grid, so a symbol that stops being scored is closed (and
    costed) on the first bar it is missing, instead of keeping its last weight unseen.
    """
    grid = weights.select(pl.col("ts").unique()).join(weights.select(pl.col("symbol").unique()), how="cross")
    full = grid.join(weights, on=["ts", "symbol"], how="left").with_columns(pl.col("weight").fill_null(0.0))
    return full.sort("symbol", "ts")


def hold_between_rebalances(weights: pl.DataFrame, every: int) -> pl.DataFrame:
    """Recompute weights only on every `every`-th timestamp; hold them in between.

    `weights` must be on the full grid (on_full_grid): a symbol without a score on a rebalance
    date then has weight 0 there and stays flat until the next rebalance.
    """
    if every <= 1:
        return weights
    dates = weights.select(pl.col("ts").unique().sort()).with_row_index("i")
    grid = dates.select("ts", (pl.col("i") % every == 0).alias("rebalance"))
    rebalanced = pl.when(pl.col("rebalance")).then(pl.col("weight"))
    held = weights.join(grid, on="ts").sort("symbol", "ts").with_columns(
        rebalanced.forward_fill().over("symbol").fill_null(0.0).alias("weight")
    )
    return held.select("symbol", "ts", "weight")


def run_backtest(scores: pl.DataFrame, bars: pl.DataFrame, cfg: dict[str, Any], periods_per_year: float) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Returns the per-period equity curve (ts, gross, turnover, exposure, cost, net, equity) and
    summary metrics. exposure = sum |w| (gross exposure, at most 1); turnover = sum |w_t - w_(t-1)|.

    Periods are the scored timestamps at which some symbol has a return to earn; a held symbol
    without a bar at a timestamp earns nothing there (its own next bar's return covers the gap).
    """
    weights = on_full_grid(target_weights(scores, cfg["strategy"], cfg["quantile"]))
    weights = hold_between_rebalances(weights, cfg.get("rebalance_every", 1))
    returns = period_returns(bars, cfg["execution"])
    book = weights.join(returns, on=["symbol", "ts"], how="left").sort("symbol", "ts").with_columns(
        (pl.col("weight") - pl.col("weight").shift(1).over("symbol").fill_null(0.0)).abs().alias("trade")
    )
    curve = (
        book.group_by("ts")
        .agg((pl.col("weight") * pl.col("ret").fill_null(0.0)).sum().alias("gross"), pl.col("trade").sum().alias("turnover"),
             pl.col("weight").abs().sum().alias("exposure"), pl.col("ret").is_not_null().any().alias("tradable"))
        .filter(pl.col("tradable")).drop("tradable")
        .sort("ts")
        .with_columns((pl.col("turnover") * cfg["cost_bps"] / 1e4).alias("cost"))
        .with_columns((pl.col("gross") - pl.col("cost")).alias("net"))
        .with_columns((1.0 + pl.col("net")).cum_prod().alias("equity"))
    )
    return curve, summarize(curve, periods_per_year)


def summarize(curve: pl.DataFrame, periods_per_year: float) -> dict[str, Any]:
    """Summary of the net returns r_1..r_n, with equity E_i = prod_{j<=i} (1 + r_j) and E_0 = 1:

      total_return      = E_n - 1
      annual_return     = E_n ** (ppy / n) - 1            (-1 once the equity is gone)
      annual_volatility = std(r, ddof=1) * sqrt(ppy)
      sharpe            = mean(r) / std(r, ddof=1) * sqrt(ppy)          (zero risk-free rate)
      sortino           = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(ppy) (downside deviation, target 0)
      max_drawdown      = min_i E_i / max(E_0, ..., E_i) - 1   (<= 0; the starting capital E_0
                          counts, so a -10% first period is a -10% drawdown)
      hit_rate          = share of periods with r > 0
      mean_turnover     = mean over periods of sum_symbols |w_t - w_(t-1)|;  total_cost = sum of costs
    with ppy the periods per year. Ratios with a zero denominator are NaN.
    """
    n = curve.height
    if n == 0:
        return {"periods": 0}
    net = curve["net"].to_numpy()
    equity = curve["equity"].to_numpy()
    std = float(net.std(ddof=1)) if n > 1 else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(net, 0.0) ** 2)))
    root = math.sqrt(periods_per_year)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    final = float(equity[-1])
    return {
        "periods": n,
        "start": curve["ts"][0].isoformat(),
        "end": curve["ts"][-1].isoformat(),
        "total_return": final - 1.0,
        "annual_return": final ** (periods_per_year / n) - 1.0 if final > 0 else -1.0,
        "annual_volatility": std * root,
        "sharpe": float(net.mean()) / std * root if std > 0 else float("nan"),
        "sortino": float(net.mean()) / downside * root if downside > 0 else float("nan"),
        "max_drawdown": min(float((equity / peak - 1.0).min()), 0.0),
        "hit_rate": float((net > 0).mean()),
        "mean_turnover": float(curve["turnover"].mean()),
        "total_cost": float(curve["cost"].sum()),
        "periods_per_year": periods_per_year,
    }
