"""The market a fine-tuned policy trades in: the backtest's own book-keeping, step by step per symbol.

A `Market` is one segment of a run (the training segment for rollouts, validation for early
stopping) on the backtest's dense grid (quant_cli.backtest.panel.Grid): its timestamps × symbols,
the scorable row of each cell (-1: the symbol has no window there and is flat, as an unscored
symbol is in the backtest) and the return a position decided at the close of t earns —
`period_returns`, filled at t+1's execution price and held to t+2's, exactly what the backtest books.

`trade` turns the policy's positions a ∈ [-1, 1] into target weights with the backtest's own
`position` strategy (a / n, n the symbols with a row) and its limits (max_weight, max_net,
max_gross), on its rebalance schedule, and books them with its own `simulate`: drift between
rebalances, commission and slippage on turnover (cost_bps, slippage_bps, min_trade_cost), borrow
on shorts. What it returns per cell sums over the symbols to the book's net return of the period,
so the rewards are the backtest's PnL, split by symbol.

The state of a cell is the window ending at t (features known at the close of t) and the position
held going into t's trade; the return of the cell is realised only after the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest import strategies
from quant_cli.backtest.engine import costs_of, with_defaults
from quant_cli.backtest.panel import Grid, period_returns
from quant_cli.backtest.simulate import Costs, simulate, trade_costs


@dataclass
class Book:
    """One traded stretch: per cell (T, N) the net contribution to the book's return and the
    position held before the trade, both in the policy's units (× n: a position of 1 on one of n
    symbols is a weight of 1/n)."""

    pnl: np.ndarray  # (T, N) held · R − costs − borrow of the cell, × n
    before: np.ndarray  # (T, N) the position going into t's trade (drifted from t−1), × n
    net: np.ndarray  # (T,) the book's net return per period (what the backtest's curve holds)


@dataclass
class Market:
    grid: Grid  # the segment's timestamps × symbols
    cell: np.ndarray  # (T, N) int64 index of the scorable row in the segment's rows, -1: none
    returns: np.ndarray  # (T, N) the next-bar return a decision at t earns, NaN: no bar
    cfg: dict[str, Any]  # [backtest] with its defaults
    costs: Costs
    scale: float  # std of the returns: rewards are in these units

    @property
    def steps(self) -> int:
        return self.cell.shape[0]

    def trade(self, positions: np.ndarray, start: int = 0) -> Book:
        """Book `positions` (T', N) (NaN where a cell has no row) over rows start..start+T'−1,
        starting flat, with the backtest's strategy `position`, limits, schedule and costs."""
        stop = start + len(positions)
        R = self.returns[start:stop]
        rebalance = strategies.rebalance_rows(
            self.grid.ts[start:stop], self.cfg["rebalance_every"], self.cfg["rebalance"]
        )
        target = strategies.limit(strategies.base_weights(positions, {"strategy": "position"}, rebalance), self.cfg)
        book = simulate(target, R, rebalance, self.costs)
        cost = trade_costs(book.traded, book.equity_before, self.costs) if not self.costs.free else 0.0
        short = self.costs.borrow_per_period * np.maximum(-book.held, 0.0)
        n = np.maximum(np.isfinite(positions).sum(axis=1, keepdims=True), 1)
        pnl = book.held * np.nan_to_num(R) - cost - short
        return Book(pnl * n, book.pre * n, book.net)


def market(rows: pl.DataFrame, bars: pl.DataFrame, cfg: dict[str, Any], periods_per_year: float) -> Market:
    """The Market of `rows` (symbol, ts: a segment's scorable rows, in the order the policy scores
    them) on the adjusted `bars` the labels were measured on."""
    cfg = with_defaults(cfg)
    grid = Grid.of(rows)
    cell = grid.dense(rows.select("symbol", "ts", pl.int_range(pl.len()).alias("cell")), "cell")
    cell = np.where(np.isfinite(cell), cell, -1).astype(np.int64)
    returns = grid.dense(period_returns(bars, cfg["execution"]), "ret")
    returns = np.where(cell >= 0, returns, np.nan)  # only the segment's own cells trade
    finite = returns[np.isfinite(returns)]
    scale = float(finite.std()) if finite.size > 1 and finite.std() > 0 else 1.0
    return Market(grid, cell, returns, cfg, costs_of(cfg, periods_per_year), scale)


def rewards(book: Book, market: Market, kind: str, risk_penalty: float, decay: float) -> np.ndarray:
    """(T, N) reward per cell: its net return in units of the returns' std (`pnl`), or the
    differential Sharpe ratio of that stream per symbol (`sharpe`, Moody & Saffell 1998: the
    first-order change of an exponentially weighted Sharpe ratio when the cell's return arrives),
    minus risk_penalty × the squared net return."""
    x = book.pnl / market.scale
    reward = _differential_sharpe(x, decay) if kind == "sharpe" else x.copy()
    return reward - risk_penalty * x * x


def _differential_sharpe(x: np.ndarray, eta: float) -> np.ndarray:
    """D_t = (B_{t−1}·ΔA_t − ½·A_{t−1}·ΔB_t) / (B_{t−1} − A_{t−1}²)^{3/2}, A and B the moving first
    and second moments (rate eta) of each column, started at A = 0, B = 1 (unit variance: x is
    in units of the returns' std), so the first steps are defined."""
    A = np.zeros(x.shape[1])
    B = np.ones(x.shape[1])
    out = np.empty_like(x)
    for t in range(len(x)):  # a recursion in time; vectorised over symbols
        dA, dB = x[t] - A, x[t] * x[t] - B
        var = np.maximum(B - A * A, 1e-12)
        out[t] = (B * dA - 0.5 * A * dB) / var**1.5
        A, B = A + eta * dA, B + eta * dB
    return out


def advantages(
    reward: np.ndarray, value: np.ndarray, valid: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) (T, N) by generalised advantage estimation along each symbol's time
    axis; the stretch ends after its last row (no bootstrap: the rollout is an episode). Cells
    without a row carry no reward and no value, and are masked from the loss by the caller."""
    reward, value = np.where(valid, reward, 0.0), np.where(valid, value, 0.0)
    adv = np.zeros_like(reward)
    running = np.zeros(reward.shape[1])
    for t in range(len(reward) - 1, -1, -1):
        following = value[t + 1] if t + 1 < len(reward) else 0.0
        delta = reward[t] + gamma * following - value[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, adv + value
