"""Training losses. Each takes the model output (B, K) and the batch's targets, weights and
timestamp codes and returns a scalar; weights are normalised to the batch. A loss with
`needs_previous` (pnl) also takes each sample's previous score (see `Previous`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _mean(per_row: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return per_row.mean() if w is None else (per_row * w).sum() / w.sum().clamp_min(1e-12)


def mse(out, y, w=None, group=None):
    return _mean((out[:, 0] - y) ** 2, w)


def huber(out, y, w=None, group=None):
    return _mean(F.huber_loss(out[:, 0], y, reduction="none", delta=1.0), w)


def cross_entropy(out, y, w=None, group=None):
    return _mean(F.cross_entropy(out, y, reduction="none"), w)


def sharpe(out, y, w=None, group=None):
    """-mean/std of the batch's per-timestamp portfolio returns, position = tanh(score).

    Each timestamp's return is the mean of position × return over its symbols in the batch (a
    cross-sectional portfolio); without timestamps each sample is its own period.
    """
    pnl = torch.tanh(out[:, 0]) * y  # (B,)
    if w is not None:
        pnl = pnl * w
    if group is not None:
        codes, inverse = torch.unique(group, return_inverse=True)
        sums = torch.zeros(len(codes), device=pnl.device, dtype=pnl.dtype).index_add_(0, inverse, pnl)
        counts = torch.zeros(len(codes), device=pnl.device, dtype=pnl.dtype).index_add_(0, inverse, torch.ones_like(pnl))
        pnl = sums / counts  # (T,) per-timestamp portfolio return
    if len(pnl) < 2:
        return -pnl.mean()
    return -pnl.mean() / (pnl.std() + 1e-6)


def _per_timestamp(pnl: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """(T,) mean of `pnl` over each timestamp's samples, in time order (codes are epoch
    microseconds, and torch.unique sorts); each sample is its own period without timestamps."""
    if group is None:
        return pnl
    codes, inverse = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(codes), device=pnl.device, dtype=pnl.dtype).index_add_(0, inverse, pnl)
    counts = torch.zeros(len(codes), device=pnl.device, dtype=pnl.dtype).index_add_(0, inverse, torch.ones_like(pnl))
    return sums / counts


@dataclass
class Previous:
    """Each sample's score at the same symbol's previous bar, from the window ending there (so a
    position depends on the symbol's scores up to t only), and whether there is one (a symbol's
    first usable bar has none: it starts flat)."""

    score: torch.Tensor  # (B,) finite everywhere (a placeholder where `known` is False)
    known: torch.Tensor  # (B,) bool


@dataclass
class PnL:
    """-(mean per-timestamp net return) + drawdown_penalty x (max drawdown of those returns).

    position_t = tanh(score_t); a sample's net return = position_t x y_t - cost x |position_t -
    position_t-1| (y: the label, the forward return from the execution price, in the model's target
    units; `cost` in the same units). Timestamps are portfolios (mean over their symbols, as the
    sharpe loss); the drawdown is of the cumulative sum of the batch's per-timestamp returns in time
    order — of the batch's timestamps, a sample of the training period's path.
    """

    cost: float = 0.0
    drawdown_penalty: float = 0.0
    needs_previous = True

    def __call__(self, out, y, w=None, group=None, previous: Previous | None = None):
        position = torch.tanh(out[:, 0])  # (B,)
        before = torch.zeros_like(position) if previous is None else torch.where(
            previous.known, torch.tanh(previous.score), torch.zeros_like(position))
        net = position * y - self.cost * (position - before).abs()
        if w is not None:
            net = net * w
        period = _per_timestamp(net, group)  # (T,)
        loss = -period.mean()
        if self.drawdown_penalty > 0:
            wealth = torch.cumsum(period, 0)
            peak = torch.cummax(torch.cat([wealth.new_zeros(1), wealth]), 0).values[1:]
            loss = loss + self.drawdown_penalty * (peak - wealth).max()
        return loss


def loss_fn(name: str, classifier: bool, cost: float = 0.0, drawdown_penalty: float = 0.0):
    """The loss of `name`; pnl's `cost` is per unit of position traded, in the target's units."""
    if classifier:
        return cross_entropy
    if name == "pnl":
        return PnL(cost, drawdown_penalty)
    return {"mse": mse, "huber": huber, "sharpe": sharpe}[name]
