"""Trading telemetry of a regression fit, per epoch on the validation rows (history.json).

The position rule of the trading losses (quant_cli.models.torch.losses: sharpe, pnl), applied to the
validation scores of the epoch's weights, whatever loss trains the model: position = tanh(score) per
symbol, earning the row's label (the forward return from the execution price; the next bar's return
for a 1-bar horizon) and paying `cost` per unit of |position change| from the same symbol's previous
validation row (a symbol's first validation row starts flat). Rows of one timestamp form a portfolio
(their mean), as in the losses. Reported in return units (the model's scaled targets are scaled
back): `val_pnl` (mean per-timestamp net return), `val_pnl_sharpe` (its mean / std, not annualised),
`val_turnover` (mean |position change|), `val_exposure` (mean net position) and `val_gross` (mean
|position|). Classifiers and path models have no single score to trade and report none of these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quant_cli.models.torch.windows import Samples


@dataclass(frozen=True)
class Trading:
    cost: float  # per unit of position traded, in return units (train.pnl_cost_bps / 1e4)
    y_mean: float = 0.0  # the model's targets are (label - y_mean) / y_std
    y_std: float = 1.0


def previous_sample(val: Samples) -> torch.Tensor:
    """(n,) index of the sample at each sample's previous row (`prev`) among `val`, -1 where none is."""
    n = len(val)
    if val.prev is None or n == 0:
        return torch.full((n,), -1, dtype=torch.int64)
    ends, prev = val.ends.cpu(), val.prev.cpu()
    order = torch.argsort(ends)
    sorted_ends = ends[order]
    at = torch.searchsorted(sorted_ends, prev).clamp(max=n - 1)
    found = (prev >= 0) & (sorted_ends[at] == prev)
    return torch.where(found, order[at], torch.full_like(prev, -1))


def _per_timestamp(values: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    if group is None:
        return values
    _, inverse = torch.unique(group, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, dtype=values.dtype).index_add_(0, inverse, values)
    counts = torch.zeros_like(sums).index_add_(0, inverse, torch.ones_like(values))
    return sums / counts


def trading_stats(out: torch.Tensor, val: Samples, trading: Trading | None) -> dict[str, float]:
    """The epoch's validation PnL, turnover and exposure (module doc); {} when there is nothing to trade."""
    y = val.y
    if trading is None or y is None or y.dim() != 1 or y.is_floating_point() is False or out.shape[1] != 1:
        return {}
    position = torch.tanh(out[:, 0].double())  # (n,)
    returns = y.cpu().double() * trading.y_std + trading.y_mean  # (n,) the label in return units
    before_idx = previous_sample(val)
    before = torch.where(before_idx >= 0, position[before_idx.clamp(min=0)], torch.zeros_like(position))
    traded = (position - before).abs()
    group = None if val.group is None else val.group.cpu()
    net = _per_timestamp(position * returns - trading.cost * traded, group)  # (T,)
    std = float(net.std()) if len(net) > 1 else math.nan
    return {
        "val_pnl": float(net.mean()),
        "val_pnl_sharpe": float(net.mean()) / std if std and math.isfinite(std) else math.nan,
        "val_turnover": float(_per_timestamp(traded, group).mean()),
        "val_exposure": float(_per_timestamp(position, group).mean()),
        "val_gross": float(_per_timestamp(position.abs(), group).mean()),
    }
