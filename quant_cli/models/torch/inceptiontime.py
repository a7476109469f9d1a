"""inceptiontime: a stack of inception modules over the window (Ismail Fawaz et al. 2020).

Each inception module narrows its input with a 1x1 bottleneck convolution (when the input has more
than one channel) and runs three convolutions with kernels k, k/2 and k/4 over it side by side (made
odd, 40/20/10 → 39/19/9, so 'same' padding is symmetric); a fourth branch max-pools the module's input
(3 steps) and applies a 1x1 convolution. The four outputs (`filters` channels each) are concatenated,
normalised and passed through a ReLU. A residual connection (1x1 convolution + normalisation) spans
every third module. Global average pooling over the window feeds the head.

Kept from the paper: the module (bottleneck, three kernel widths, max-pool branch), residuals every
third module, depth 6, global pooling. Not kept: the ensemble of five networks (train five seeds
for that), and BatchNorm, replaced by a LayerNorm over the channels of each step so a score never
depends on the other windows of its batch. Defaults are smaller than the paper's (filters 32,
bottleneck 32, kernel 40) so the recipe trains on a CPU: kernel 40 is wider than a 32-bar window.
Causality: the window ends at the row scored (t), so 'same' padding and pooling reach nothing after t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head


@dataclass
class InceptionTimeConfig(SequenceConfig):
    filters: int = param(16, "channels of each of a module's four branches (paper: 32)", at_least(1))
    bottleneck: int = param(16, "channels of the 1x1 bottleneck before the wide kernels (paper: 32)", at_least(1))
    kernel_size: int = param(16, "widest kernel; the other two are kernel_size/2 and /4 (paper: 40)", between(4, 512))
    depth: int = param(6, "inception modules; a residual connection spans every third", between(1, 30))


def odd(k: int) -> int:
    """The odd kernel width at or just below k (>= 1): 'same' padding is then symmetric (40 → 39)."""
    return max(1, k - 1 + k % 2)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each step of (B, C, L): no batch or time statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, C, L)


class Inception(nn.Module):
    def __init__(self, c_in: int, cfg: InceptionTimeConfig) -> None:
        super().__init__()
        narrow = c_in > 1
        width = cfg.bottleneck if narrow else c_in
        self.bottleneck = nn.Conv1d(c_in, width, 1, bias=False) if narrow else nn.Identity()
        kernels = [odd(cfg.kernel_size // 2**i) for i in range(3)]  # k, k/2, k/4, made odd
        self.convs = nn.ModuleList(nn.Conv1d(width, cfg.filters, k, padding="same", bias=False) for k in kernels)
        self.pool = nn.MaxPool1d(3, stride=1, padding=1)
        self.pool_conv = nn.Conv1d(c_in, cfg.filters, 1, bias=False)
        self.norm = ChannelNorm(4 * cfg.filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(x)  # (B, bottleneck, L)
        branches = [conv(z) for conv in self.convs] + [self.pool_conv(self.pool(x))]  # 4 × (B, filters, L)
        return F.relu(self.norm(torch.cat(branches, dim=1)))  # (B, 4·filters, L)


class InceptionTime(nn.Module):
    def __init__(self, cfg: InceptionTimeConfig) -> None:
        super().__init__()
        width = 4 * cfg.filters
        self.stack = nn.ModuleList(Inception(cfg.n_inputs if i == 0 else width, cfg) for i in range(cfg.depth))
        # one shortcut per full group of three modules, from the group's input to its output
        self.shortcuts = nn.ModuleList(
            nn.Sequential(nn.Conv1d(cfg.n_inputs if g == 0 else width, width, 1), ChannelNorm(width))
            for g in range(cfg.depth // 3)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = Head(width, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), oldest step first
        h = residual = x.transpose(1, 2)  # (B, F, L)
        for i, module in enumerate(self.stack):
            h = module(h)  # (B, 4·filters, L)
            if i % 3 == 2:
                h = residual = F.relu(h + self.shortcuts[i // 3](residual))
        return self.head(self.drop(h.mean(dim=2)), ids)  # global average pooling: (B, 4·filters) → (B, n_outputs)


class InceptionTimeModel(SequenceModel):
    name = "inceptiontime"
    config = InceptionTimeConfig
    network = InceptionTime
    fast_test = {"seq_len": 4, "filters": 2, "bottleneck": 2, "kernel_size": 4, "depth": 3}
