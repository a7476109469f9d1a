"""A vectorised, next-bar-execution backtest of model scores or of given target weights.

Weights decided at the close of bar t trade at the execution price of t+1 and earn the return
from there to the execution price of t+2 (next_open: opens, next_close: closes), the same price
path the labels are measured on (DESIGN.md §3). The book lives on the dense grid of the signal's
timestamps × symbols (panel.Grid): a symbol without a score weighs 0, so a symbol that leaves the
scores is closed and costed, and one missing on a rebalance date is flat until the next one.

scores → strategy → sizing → limits → (volatility target) → simulate (drift, trades, costs)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest import strategies
from quant_cli.backtest.metrics import prediction_metrics, summarize
from quant_cli.backtest.panel import Grid, close_returns, period_returns, trailing_std
from quant_cli.backtest.regimes import by_regime, market_regimes
from quant_cli.backtest.simulate import TRADE_EPS, Book, Costs, net_returns, simulate, trade_costs
from quant_cli.errors import DataError

BEFORE_COSTS_KEYS = ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown")


@dataclass
class Result:
    curve: pl.DataFrame  # per period: ts, gross, cost, net, equity, *_before_costs, turnover, exposure, ...
    weights: pl.DataFrame  # symbol, ts, target (rebalance rows), weight (held after the trade)
    trades: pl.DataFrame  # symbol, ts (decision), fill_ts, before, after, traded, cost
    summary: dict[str, Any]


def costs_of(cfg: dict[str, Any], periods_per_year: float) -> Costs:
    cfg = with_defaults(cfg)
    return Costs(
        commission=cfg["cost_bps"] / 1e4,
        slippage=cfg["slippage_bps"] / 1e4,
        min_cost=cfg["min_trade_cost"],
        capital=cfg["capital"],
        borrow_per_period=cfg["borrow_bps"] / 1e4 / periods_per_year,
    )


@functools.cache
def _schema_defaults() -> dict[str, Any]:
    from quant_cli.schema import SCHEMA

    return {name: key.default for name, key in SCHEMA["backtest"].items()}


def with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """cfg over the [backtest] defaults of schema.py (the one place they live), so code
    that builds a partial cfg (tests, walk-forward) gets the same defaults as a recipe."""
    return {**_schema_defaults(), **cfg}


def run_backtest(
    signal: pl.DataFrame, bars: pl.DataFrame, cfg: dict[str, Any], periods_per_year: float, kind: str = "score"
) -> Result:
    """`signal` has symbol, ts and `score` (kind "score", traded by cfg's strategy at the scored
    timestamps on cfg's rebalance schedule) or `weight` (kind "weight": target weights traded on
    the timestamps they are given, a symbol absent there closed, positions drifting with prices
    until the next given timestamp; only the limits of cfg apply)."""
    cfg = with_defaults(cfg)
    returns = period_returns(bars, cfg["execution"])
    grid = Grid.of(signal) if kind == "score" else _weights_grid(signal, bars)
    R = grid.dense(returns, "ret")
    tradable = np.isfinite(R).any(axis=1)  # a row with no next-bar price cannot fill
    if not tradable.any():  # no signal timestamp is followed by a bar: the summary would be all nulls
        raise DataError(
            f"nothing to backtest: no {kind} has a bar to trade on after it ({kind}s "
            f"{_span(signal)}, bars {_span(bars)}); "
            "give timestamps inside the data's range"
        )
    grid = Grid(grid.ts.filter(pl.Series(tradable)), grid.symbols)
    R, S = R[tradable], grid.dense(signal, kind)
    if kind == "score":
        rebalance = strategies.rebalance_rows(grid.ts, cfg["rebalance_every"], cfg["rebalance"])
        W = _targets(S, grid, bars, cfg, rebalance)
    else:  # given weights trade on the timestamps they are given and drift in between
        rebalance, W = np.isfinite(S).any(axis=1), np.nan_to_num(S)
    W = strategies.limit(W, cfg)
    if cfg["vol_target"]:
        W = strategies.limit(_vol_targeted(W, R, rebalance, cfg, periods_per_year), cfg)
    costs = costs_of(cfg, periods_per_year)
    book = simulate(W, R, rebalance, costs)
    free = book.net if costs.free else net_returns(W, R, rebalance, Costs())
    curve = _curve(grid, book, free, _benchmark(grid, returns, R, cfg["benchmark"]))
    summary = summarize(curve, periods_per_year)
    before = summarize(
        curve.with_columns(net=pl.col("net_before_costs"), equity=pl.col("equity_before_costs")), periods_per_year
    )
    summary["before_costs"] = {k: before.get(k) for k in BEFORE_COSTS_KEYS}
    summary["by_regime"] = by_regime(curve, market_regimes(bars), periods_per_year)  # see backtest/regimes.py
    if kind == "score" and "label" in signal.columns:
        summary.update(
            {k: v for k, v in prediction_metrics(signal).items() if k in ("ic", "rank_ic", "icir", "ic_kind")}
        )
    return Result(curve, _weights(grid, W, book, rebalance), _trades(grid, book, costs, bars), summary)


def _span(frame: pl.DataFrame) -> str:
    return f"{frame['ts'].min():%Y-%m-%d} to {frame['ts'].max():%Y-%m-%d}" if frame.height else "none"


def _weights_grid(weights: pl.DataFrame, bars: pl.DataFrame) -> Grid:
    """Every bar timestamp from the first given weight on (plus the given ones), so positions held
    between sparse weight dates (a monthly file on daily bars) earn every bar in between."""
    unknown = sorted(set(weights["symbol"].unique().to_list()) - set(bars["symbol"].cast(pl.String).unique().to_list()))
    if unknown:  # a phantom position would take gross exposure and pay costs without ever earning a return
        raise DataError(
            f"weights name {len(unknown)} symbol(s) with no bars in the dataset ({', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''}); drop those rows or ingest the symbols"
        )
    first = weights["ts"].min()
    ts = pl.concat([bars["ts"].filter(bars["ts"] >= first), weights["ts"]]).unique().sort()
    return Grid(ts, weights["symbol"].cast(pl.String).unique().sort())


def _targets(S: np.ndarray, grid: Grid, bars: pl.DataFrame, cfg: dict[str, Any], rebalance: np.ndarray) -> np.ndarray:
    base = strategies.base_weights(S, cfg, rebalance)
    sizing = cfg["sizing"]
    vol = trailing_std(grid.dense(close_returns(bars), "ret"), cfg["vol_window"]) if sizing == "inverse_vol" else None
    return strategies.size(base, S, vol, sizing)


def _vol_targeted(W: np.ndarray, R: np.ndarray, rebalance: np.ndarray, cfg: dict[str, Any], ppy: float) -> np.ndarray:
    """Scale each target so the book's trailing volatility hits vol_target (annualised). Row t's
    own return ends at a later bar, so the last return known at the close of t is row t−2's; rows
    without a full window of such returns keep scale 1. The gross cap (max_gross) still applies."""
    gross = net_returns(W, R, rebalance, Costs())  # cost-free: net = gross
    known = np.concatenate([[np.nan, np.nan], gross[:-2]])[: gross.size]
    sigma = trailing_std(known[:, None], cfg["vol_window"])[:, 0] * math.sqrt(ppy)
    scale = np.where(np.isfinite(sigma) & (sigma > 0), cfg["vol_target"] / np.where(sigma > 0, sigma, 1.0), 1.0)
    return W * scale[:, None]


def _benchmark(grid: Grid, returns: pl.DataFrame, R: np.ndarray, symbol: str | None) -> np.ndarray:
    """Per-period benchmark return: the benchmark symbol's (0 where it has no bar), or the
    equal-weight mean of the grid's symbols that have a return."""
    if symbol:
        own = returns.filter(pl.col("symbol") == symbol)
        if own.height == 0:
            raise DataError(
                f"backtest.benchmark {symbol!r} has no bars in the dataset; name one of "
                "its symbols or leave it unset for the equal-weight universe"
            )
        return np.nan_to_num(Grid(grid.ts, pl.Series([symbol])).dense(own, "ret")[:, 0])
    counts = np.isfinite(R).sum(axis=1)
    return np.where(counts > 0, np.nansum(R, axis=1) / np.maximum(counts, 1), 0.0)


def _curve(grid: Grid, book: Book, free: np.ndarray, benchmark: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": grid.ts,
            "gross": book.gross,
            "cost": book.cost,
            "net": book.net,
            "equity": np.cumprod(1.0 + book.net),
            "net_before_costs": free,
            "equity_before_costs": np.cumprod(1.0 + free),
            "turnover": np.abs(book.traded).sum(axis=1),
            "exposure": np.abs(book.held).sum(axis=1),
            "net_exposure": book.held.sum(axis=1),
            "holdings": (np.abs(book.held) > TRADE_EPS).sum(axis=1),
            "benchmark": benchmark,
            "benchmark_equity": np.cumprod(1.0 + benchmark),
        }
    )


def _weights(grid: Grid, W: np.ndarray, book: Book, rebalance: np.ndarray) -> pl.DataFrame:
    target = np.where(rebalance[:, None], W, np.nan)
    keep = (np.abs(book.held) > TRADE_EPS) | (rebalance[:, None] & (W != 0))
    return grid.long({"target": target, "weight": book.held}, keep).with_columns(pl.col("target").fill_nan(None))


def _trades(grid: Grid, book: Book, costs: Costs, bars: pl.DataFrame) -> pl.DataFrame:
    """One row per (decision ts, symbol) that traded; fill_ts is the symbol's next bar (where it fills)."""
    traded = book.traded
    keep = np.abs(traded) > TRADE_EPS
    cost = trade_costs(traded, book.equity_before, costs) if not costs.free else np.zeros_like(traded)
    next_bar = bars.select(
        pl.col("symbol"), "ts", pl.col("ts").shift(-1).over("symbol", order_by="ts").dt.epoch("us").alias("next")
    )
    fill = grid.dense(next_bar, "next")
    frame = grid.long({"before": book.pre, "after": book.held, "traded": traded, "cost": cost, "fill": fill}, keep)
    fill_ts = (
        pl.from_epoch(frame["fill"].fill_nan(None).cast(pl.Int64), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("fill_ts")
    )
    return frame.with_columns(fill_ts).select(
        "symbol", "ts", "fill_ts", "before", "after", "traded", "cost"
    )  # row-major: by ts, symbol
