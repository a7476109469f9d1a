"""Training losses. Each takes the model output (B, K) and the batch's targets, weights and
timestamp codes and returns a scalar; weights are normalised to the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

def _mean(per_row: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return per_row.mean() if w is None else (per_row * w).sum() / w.sum().clamp_min(1e-12)


def _pair(out, y):
    """(prediction, target) of the same shape: one score (B,), or a path model's (B, horizon)."""
    return (out, y) if y.dim() == 2 else (out[:, 0], y)


def _per_row(err: torch.Tensor) -> torch.Tensor:
    return err.mean(1) if err.dim() == 2 else err  # a path's steps weigh equally


def mse(out, y, w=None, group=None):
    pred, y = _pair(out, y)
    return _mean(_per_row((pred - y) ** 2), w)


def huber(out, y, w=None, group=None):
    pred, y = _pair(out, y)
    return _mean(_per_row(F.huber_loss(pred, y, reduction="none", delta=1.0)), w)


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


def loss_fn(name: str, classifier: bool):
    return cross_entropy if classifier else {"mse": mse, "huber": huber, "sharpe": sharpe}[name]
