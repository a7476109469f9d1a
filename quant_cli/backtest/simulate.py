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
    held: np.ndarray  # (T, N) weights after the trade at t
    pre: np.ndarray  # (T, N) weights before it (drifted from t−1)
    gross: np.ndarray  # (T,)
    cost: np.ndarray  # (T,)
    net: np.ndarray  # (T,)

    @property
    def equity_before(self) -> np.ndarray:
        """E_t, the equity at row t's fill before its trade (E_0 = 1)."""
        return np.concatenate([[1.0], np.cumprod(1.0 + self.net[:-1])])

    @property
    def traded(self) -> np.ndarray:
        return self.held - self.pre


def simulate(target: np.ndarray, returns: np.ndarray, rebalance: np.ndarray, costs: Costs) -> Book:
    """`target` (T, N) is read on rebalance rows only (NaN = 0); `returns` (T, N), NaN = no bar."""
    plan = _Plan(target, returns, rebalance)
    net = plan.solve(costs)
    scale, prev_scale, equity = plan.scales(net)
    held = plan.base * scale[:, None]
    pre = np.zeros_like(held)
    pre[1:] = plan.shifted * prev_scale[1:, None]
    held[~plan.rebalance] = pre[~plan.rebalance]
    gross = scale * plan.gross_base
    return Book(held, pre, gross, gross - net, net)


def net_returns(target: np.ndarray, returns: np.ndarray, rebalance: np.ndarray, costs: Costs) -> np.ndarray:
    """simulate(...).net without building the (T, N) held and pre-trade matrices."""
    return _Plan(target, returns, rebalance).solve(costs)


class _Plan:
    """Everything that does not depend on the net returns, computed once. With E_s the equity at
    the block's rebalance row s and E_t at row t, held_t = base_t · E_s / E_t, so gross returns,
    short notional and cash are row sums of `base` times one scalar per row; only the traded
    amounts on rebalance rows need a (rows × N) pass per fixed-point step."""

    def __init__(self, target: np.ndarray, returns: np.ndarray, rebalance: np.ndarray) -> None:
        R, target = _finite(returns), _finite(target)
        self.rebalance = np.asarray(rebalance, bool)
        self.start = _block_start(self.rebalance)
        self.base = target if self.rebalance.all() else _drifted_base(target, R, self.start)
        self.shifted = self.base[:-1] * (1.0 + R[:-1])  # pre_t = shifted_(t−1) · E_s'/E_t
        self.gross_base = np.einsum("ij,ij->i", self.base, R)
        row_sum = self.base.sum(axis=1)
        self.short_base = 0.5 * (np.abs(self.base).sum(axis=1) - row_sum)
        self.first = bool(self.rebalance[:1].any())  # row 0 trades from flat
        self.rows = np.flatnonzero(self.rebalance[1:]) + 1  # rows that trade from a drifted book
        contiguous = self.rows.size == self.rebalance.size - 1  # every row rebalances: views, no copies
        self.targets = self.base[1:] if contiguous else self.base[self.rows]
        self.before = self.shifted if contiguous else self.shifted[self.rows - 1]
        cash = np.where(self.start >= 0, 1.0 - target.sum(axis=1)[np.maximum(self.start, 0)], 1.0)
        self.free_net = self.gross_base / (cash + row_sum)  # exact without costs

    def scales(self, net: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(E_s/E_t, E_s'/E_t with s' the block of row t−1, E_t) for every row."""
        growth = np.log1p(np.maximum(net, -1.0 + 1e-12))
        equity_log = np.concatenate([[0.0], np.cumsum(growth[:-1])])  # log E_t
        scale = np.exp(-(equity_log - equity_log[np.maximum(self.start, 0)]))
        prev_scale = np.concatenate([[0.0], scale[:-1] / np.exp(growth[:-1])])
        return scale, prev_scale, np.exp(equity_log)

    def solve(self, costs: Costs) -> np.ndarray:
        net = self.free_net
        if costs.free:
            return net
        for _ in range(MAX_PASSES):
            scale, prev_scale, equity = self.scales(net)
            cost = np.zeros_like(net)
            cost[self.rows] = self._trade_costs(
                self.targets, self.before * prev_scale[self.rows, None], equity[self.rows], costs
            )
            if self.first:
                cost[:1] = self._trade_costs(self.base[:1], np.zeros_like(self.base[:1]), equity[:1], costs)
            new = scale * (self.gross_base - costs.borrow_per_period * self.short_base) - cost
            done = np.max(np.abs(new - net), initial=0.0) <= TOLERANCE
            net = new
            if done:
                break
        return net

    @staticmethod
    def _trade_costs(targets: np.ndarray, pre: np.ndarray, equity: np.ndarray, costs: Costs) -> np.ndarray:
        """Row costs of trading from `pre` to `targets` (`pre` is a scratch array, overwritten)."""
        traded = np.subtract(targets, pre, out=pre)
        if costs.min_cost > 0:
            return trade_costs(traded, equity, costs).sum(axis=1)
        signed = traded.sum(axis=1)
        size = np.abs(traded, out=traded).sum(axis=1)
        # slippage s·|n| plus commission f·|n|·(1 ± s), the sign that of the trade
        return (costs.commission + costs.slippage) * size + costs.commission * costs.slippage * signed


def _finite(x: np.ndarray) -> np.ndarray:
    """NaN → 0 (no bar, no weight), copying only when there is a NaN."""
    x = np.asarray(x, dtype=float)
    return np.nan_to_num(x, nan=0.0) if np.isnan(x).any() else x


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


def trade_costs(traded: np.ndarray, equity: np.ndarray, costs: Costs) -> np.ndarray:
    """(T, N) cost of each trade as a fraction of E_t: slippage plus commission (at least min_cost)."""
    size = np.abs(traded)
    paid = size * (1.0 + np.sign(traded) * costs.slippage)  # notional at the fill price
    commission = costs.commission * paid
    if costs.min_cost > 0:
        floor = costs.min_cost / (costs.capital * equity)
        commission = np.where(size > TRADE_EPS, np.maximum(commission, floor[:, None]), 0.0)
    return commission + costs.slippage * size
