"""Self-supervised objectives of `qfactory pretrain`, as networks the one training loop trains.

A supported network has `encode(x) -> h`: a window (B, L, F) to per-step hidden states (B, L, D),
each step seeing only steps at or before it (lstm, gru, tcn, transformer, state_space,
moe_transformer). The objective wraps that network: its forward takes the loop's batch (x, ids)
and returns each window's loss (B, 1), so the loop's loss is their mean (`mean_loss`) and nothing
in the loop branches on pretraining — AdamW, schedule, clipping, checkpoints and telemetry are the
supervised fit's. The head of the network is never trained; `encoder_names` says which tensors
are (what the pretrain run saves and `train --init` loads).

- `Masked`: the window is cut into patches of `patch_len` steps ending at its last step; a share
  `mask_ratio` of them (at least one per window, drawn per window) is replaced by a learned mask
  vector or zeros; a linear head reconstructs the original inputs from the per-step states and the
  loss is the mean squared error over the masked steps only. A causal encoder reconstructs a masked
  step from the unmasked steps before it, so this is masked forecasting in the window.
- `Contrastive` (TS2Vec, Yue et al. 2022): two overlapping crops of the window (the overlap at least
  `crop` of it, drawn per batch), each with its timestamps masked to zero with probability
  `mask_ratio`; the states of the two views over the overlap are contrasted hierarchically
  (max-pooled by 2 along time until one step): the instance loss contrasts each window with the
  other windows of the batch at the same step, the temporal loss each step with the window's other
  steps, weighted `instance_weight` and 1 - `instance_weight`, logits divided by `temperature`.

Randomness (masks, crops) draws from torch's generator, which the loop seeds and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEAD_PREFIX = "head."


@dataclass(frozen=True)
class PretrainConfig:
    """The [pretrain] keys the objectives read (quant_cli.schema is their one source of defaults)."""

    objective: str = "masked"
    mask_ratio: float = 0.4
    patch_len: int = 4
    mask_value: str = "token"
    crop: float = 0.5
    temperature: float = 1.0
    instance_weight: float = 0.5

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> PretrainConfig:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


def supports(network: type) -> bool:
    """Whether a network class maps a window to per-step hidden states (`encode`)."""
    return callable(getattr(network, "encode", None))


def encoder_names(net: nn.Module, n_inputs: int, seq_len: int) -> list[str]:
    """Names of the state-dict tensors `encode` uses: parameters that get a gradient from a probe
    forward, and buffers outside the head. The probe runs in eval mode (no dropout draw)."""
    was_training = net.training
    net.eval()
    with torch.enable_grad():
        net.encode(torch.zeros(2, seq_len, n_inputs)).float().square().sum().backward()
    used = {name for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    buffers = {name for name, _ in net.named_buffers() if not name.startswith(HEAD_PREFIX)}
    return [name for name in net.state_dict() if name in used or name in buffers]


def _width(net: nn.Module, n_inputs: int, seq_len: int) -> int:
    with torch.no_grad():
        was_training = net.training
        net.eval()
        width = net.encode(torch.zeros(1, seq_len, n_inputs)).shape[-1]
        net.train(was_training)
    return int(width)


class Masked(nn.Module):
    def __init__(self, backbone: nn.Module, cfg: PretrainConfig, n_inputs: int, seq_len: int) -> None:
        super().__init__()
        self.backbone, self.cfg = backbone, cfg
        self.mask = nn.Parameter(torch.zeros(n_inputs)) if cfg.mask_value == "token" else None
        self.reconstruct = nn.Linear(_width(backbone, n_inputs, seq_len), n_inputs)
        _forward_hooks(self, backbone)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F)
        masked = patch_mask(x.shape[0], x.shape[1], self.cfg.patch_len, self.cfg.mask_ratio, x.device)  # (B, L)
        fill = self.mask.to(x.dtype) if self.mask is not None else x.new_zeros(x.shape[2])
        inputs = torch.where(masked[:, :, None], fill, x)  # (B, L, F)
        error = (self.reconstruct(self.backbone.encode(inputs)).float() - x.float()).square().mean(2)  # (B, L)
        per_window = (error * masked).sum(1) / masked.sum(1)  # (B,): masked steps only
        return per_window[:, None]  # (B, 1)


def patch_mask(batch: int, length: int, patch_len: int, ratio: float, device) -> torch.Tensor:
    """(B, L) bool: whole patches of `patch_len` steps (the last one ends at the window's last step,
    the first may be shorter) masked, round(ratio × patches) per window and at least one."""
    patches = math.ceil(length / patch_len)
    count = min(patches, max(1, round(ratio * patches)))
    ranks = torch.rand(batch, patches, device=device).argsort(1).argsort(1)  # a random order per window
    chosen = ranks < count  # (B, P)
    step_patch = (torch.arange(length, device=device) + (patches * patch_len - length)) // patch_len  # (L,)
    return chosen[:, step_patch]


class Contrastive(nn.Module):
    def __init__(self, backbone: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__()
        self.backbone, self.cfg = backbone, cfg
        _forward_hooks(self, backbone)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F)
        length = x.shape[1]
        overlap = _draw(max(1, math.ceil(self.cfg.crop * length)), length)  # steps both views share
        start = _draw(0, length - overlap)  # the overlap is [start, start + overlap)
        left, right = _draw(0, start), _draw(start + overlap, length)  # view 1: [left, ...), view 2: [..., right)
        views = []
        for a, b in ((left, start + overlap), (start, right)):
            crop = x[:, a:b]
            keep = torch.rand(crop.shape[:2], device=x.device) >= self.cfg.mask_ratio  # timestamp masking
            h = self.backbone.encode(crop * keep[:, :, None].to(crop.dtype)).float()  # (B, b - a, D)
            views.append(h[:, start - a : start - a + overlap])  # (B, O, D): the overlap's states
        return hierarchical_loss(*views, self.cfg.instance_weight, self.cfg.temperature)[:, None]  # (B, 1)


def _draw(low: int, high: int) -> int:
    """An integer in [low, high] from torch's generator."""
    return int(torch.randint(low, high + 1, (1,)).item())


def hierarchical_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """(B,) TS2Vec's hierarchical contrastive loss per window; its mean is the batch loss."""
    total, depth = z1.new_zeros(z1.shape[0]), 0
    while z1.shape[1] > 1:
        if alpha > 0:
            total = total + alpha * instance_loss(z1, z2, temperature)
        if alpha < 1:
            total = total + (1 - alpha) * temporal_loss(z1, z2, temperature)
        depth += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if alpha > 0:
        total = total + alpha * instance_loss(z1, z2, temperature)
        depth += 1
    return total / max(depth, 1)


def _pair_loss(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z (G, 2n, D): two views of n items in G groups → (G, n) cross-entropy of each item picking its
    twin among the 2n - 1 others, averaged over both directions."""
    n = z.shape[1] // 2
    sim = torch.matmul(z, z.transpose(1, 2)) / temperature  # (G, 2n, 2n)
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1] + torch.triu(sim, diagonal=1)[:, :, 1:]  # self removed
    logits = -F.log_softmax(logits, dim=-1)  # (G, 2n, 2n - 1)
    i = torch.arange(n, device=z.device)
    return (logits[:, i, n + i - 1] + logits[:, n + i, i]) / 2  # (G, n)


def instance_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,): each window against the batch's other windows at the same step, averaged over steps."""
    if z1.shape[0] < 2:
        return z1.new_zeros(z1.shape[0])
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)  # (T, 2B, D)
    return _pair_loss(z, temperature).mean(0)  # (B,)


def temporal_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,): each step against the same window's other steps, averaged over steps."""
    z = torch.cat([z1, z2], dim=1)  # (B, 2T, D)
    return _pair_loss(z, temperature).mean(1)  # (B,)


def _forward_hooks(objective: nn.Module, backbone: nn.Module) -> None:
    """The loop's network hooks (auxiliary_loss, epoch_stats) of the backbone, e.g. moe load balancing."""
    for hook in ("auxiliary_loss", "epoch_stats"):
        if callable(getattr(backbone, hook, None)):
            setattr(objective, hook, getattr(backbone, hook))


def objective(backbone: nn.Module, cfg: PretrainConfig, n_inputs: int, seq_len: int) -> nn.Module:
    if cfg.objective == "contrastive":
        return Contrastive(backbone, cfg)
    return Masked(backbone, cfg, n_inputs, seq_len)


def mean_loss(out: torch.Tensor, y=None, w=None, group=None) -> torch.Tensor:
    """The loop's loss of a pretraining batch: the mean of the windows' own losses (out: (B, 1))."""
    return out[:, 0].mean()
