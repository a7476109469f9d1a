"""The book-keeping core: target weights and period returns on a dense (ts × symbol) grid → held
weights, trades, costs and net returns. numpy only, no per-bar Python loop.

Conventions (DESIGN.md §3). Row t is the decision made at the close of bar t; its trades fill at
the execution price of bar t+1 (`P_t` below) and the position earns R[t, i] = P_{t+1,i} / P_{t,i} − 1
(`period_returns`). A missing return (no bar) is 0: the position earns nothing there.

Weights are fractions of the equity E_t marked at the fill price, before the trade. On a
rebalance row the book trades to the target; between rebalances nothing trades and the held
weights drift with prices:

    pre_t  = held_{t−1} · (1 + R_{t−1}) / (1 + net_{t−1})        (pre_0 = 0)
    held_t = target_t on rebalance rows, pre_t otherwise
    gross_t = Σ_i held_{t,i} · R_{t,i}
    cost_t  = Σ_i c(held_{t,i} − pre_{t,i}) + borrow · Σ_i max(−held_{t,i}, 0)
    net_t   = gross_t − cost_t,   E_{t+1} = E_t · (1 + net_t),  E_0 = 1

A trade of notional n (fraction of E_t) fills at P·(1 + s) when buying and P·(1 − s) when
selling (s = slippage); its cost is slippage n·s plus commission f·n·(1 ± s) on what was paid,
and at least `min_cost` (in currency, against capital · E_t). The cash left (1 − Σ held) earns 0.

pre_t depends on net_{t−1}, which depends on the costs: the system is solved by a fixed-point
iteration over whole arrays, started from the cost-free solution; each pass shrinks the error by
about the cost rate times the turnover, so a few passes reach machine precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_PASSES = 50
TOLERANCE = 1e-15
TRADE_EPS = 1e-12  # a |trade| below this is float noise, not an order (matters for min_cost)


@dataclass(frozen=True)
class Costs:
    """Per-trade cost parameters, as fractions (bps / 1e4) except min_cost (currency)."""

    commission: float = 0.0
    slippage: float = 0.0
    min_cost: float = 0.0
    capital: float = 1_000_000.0
    borrow_per_period: float = 0.0

    @property
    def free(self) -> bool:
        return self.commission == 0 and self.slippage == 0 and self.min_cost == 0 and self.borrow_per_period == 0


@dataclass
class Book:
    held: np.ndarray      # (T, N) weights after the trade at t
    pre: np.ndarray       # (T, N) weights before it (drifted from t−1)
    gross: np.ndarray     # (T,)
    cost: np.ndarray      # (T,)
    net: np.ndarray       # (T,)

    @property
    def equity_before(self) -> np.ndarray:
        """E_t, the equity at row t's fill before its trade (E_0 = 1)."""
        return np.concatenate([[1.0], np.cumprod(1.0 + self.net[:-1])])

    @property
    def traded(self) -> np.ndarray:
        return self.held - self.pre


def simulate(target: np.ndarray, returns: np.ndarray, rebalance: np.ndarray, costs: Costs) -> Book:
    """`target` (T, N) is read on rebalance rows only (NaN = 0); `returns` (T, N), NaN = no bar."""
    R = np.nan_to_num(returns, nan=0.0)
    target = np.nan_to_num(target, nan=0.0)
    start = _block_start(rebalance)
    base = _drifted_base(target, R, start)           # held_t · Π(1 + net) over the block
    shifted = np.vstack([np.zeros((1, R.shape[1])), base[:-1] * (1.0 + R[:-1])])
    cash = np.where(start >= 0, 1.0 - target[np.maximum(start, 0)].sum(axis=1), 1.0)
    net = (base * R).sum(axis=1) / (cash + base.sum(axis=1))  # exact without costs
    for _ in range(MAX_PASSES):
        book = _pass(base, shifted, R, rebalance, start, net, costs)
        done = np.max(np.abs(book.net - net), initial=0.0) <= TOLERANCE
        net = book.net
        if done or costs.free:
            return book
    return book


def _block_start(rebalance: np.ndarray) -> np.ndarray:
    """Index of the last rebalance row at or before t (−1 before the first)."""
    idx = np.where(rebalance, np.arange(rebalance.size), -1)
    return np.maximum.accumulate(idx) if idx.size else idx


def _drifted_base(target: np.ndarray, R: np.ndarray, start: np.ndarray) -> np.ndarray:
    """target_s · Π_{u=s}^{t−1} (1 + R_u) for the block start s of each row (0 before the first)."""
    logs = np.vstack([np.zeros((1, R.shape[1])), np.cumsum(np.log1p(R[:-1]), axis=0)])  # exclusive
    s = np.maximum(start, 0)
    base = target[s] * np.exp(logs - logs[s])
    base[start < 0] = 0.0
    return base


def _pass(base: np.ndarray, shifted: np.ndarray, R: np.ndarray, rebalance: np.ndarray, start: np.ndarray,
          net: np.ndarray, costs: Costs) -> Book:
    """One fixed-point step: held and pre-trade weights given the net returns of the last pass."""
    growth = np.log1p(np.maximum(net, -1.0 + 1e-12))
    equity_log = np.concatenate([[0.0], np.cumsum(growth[:-1])])        # log E_t
    s = np.maximum(start, 0)
    scale = np.exp(-(equity_log - equity_log[s]))                        # E_s / E_t
    held = base * scale[:, None]
    prev_scale = np.concatenate([[0.0], scale[:-1] / np.exp(growth[:-1])])  # E_s' / E_t for row t−1's block
    pre = shifted * prev_scale[:, None]
    held = np.where(rebalance[:, None], held, pre)
    gross = (held * R).sum(axis=1)
    cost = _costs(held - pre, held, np.exp(equity_log), costs)
    return Book(held, pre, gross, cost, gross - cost)


def _costs(traded: np.ndarray, held: np.ndarray, equity: np.ndarray, costs: Costs) -> np.ndarray:
    if costs.free:
        return np.zeros(traded.shape[0])
    per_row = trade_costs(traded, equity, costs).sum(axis=1)
    return per_row + costs.borrow_per_period * np.maximum(-held, 0.0).sum(axis=1)


def trade_costs(traded: np.ndarray, equity: np.ndarray, costs: Costs) -> np.ndarray:
    """(T, N) cost of each trade as a fraction of E_t: slippage plus commission (at least min_cost)."""
    size = np.abs(traded)
    paid = size * (1.0 + np.sign(traded) * costs.slippage)               # notional at the fill price
    commission = costs.commission * paid
    if costs.min_cost > 0:
        floor = costs.min_cost / (costs.capital * equity)
        commission = np.where(size > TRADE_EPS, np.maximum(commission, floor[:, None]), 0.0)
    return commission + costs.slippage * size
