"""resnet1d: the fully convolutional residual network for time series (Wang, Yan & Oates 2017).

Three residual blocks; each block is three convolutions with kernels 7, 5 and 3 (the paper's 8, 5,
3 made odd, so 'same' padding is symmetric), each followed by a normalisation and a ReLU (the last
ReLU after the shortcut is added); the shortcut is a 1x1 convolution where the width changes. Widths
are `channels`, 2·channels, 2·channels (the paper: 64, 128, 128). Global average pooling over the
window summarises it for the head.

Causality: the window ends at the row scored (t), so 'same' padding inside it reaches nothing after
t. The paper's BatchNorm is replaced by a LayerNorm over the channels of each step, so a score never
depends on the other windows of its batch (nor on batch statistics at all).
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

KERNELS = (7, 5, 3)  # the three convolutions of every block


@dataclass
class ResNet1DConfig(SequenceConfig):
    channels: int = param(32, "width of the first block; the later blocks are twice as wide (paper: 64)", at_least(1))
    blocks: int = param(3, "residual blocks of three convolutions (kernels 7, 5, 3)", between(1, 16))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each step of (B, C, L): no batch or time statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, C, L)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        widths = [c_in, c_out, c_out, c_out]
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], k, padding="same") for i, k in enumerate(KERNELS)
        )
        self.norms = nn.ModuleList(ChannelNorm(c_out) for _ in KERNELS)
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, 1), ChannelNorm(c_out)) if c_in != c_out else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, C_in, L)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h))  # (B, C_out, L)
            if i < len(KERNELS) - 1:
                h = F.relu(h)
        return self.drop(F.relu(h + self.skip(x)))  # (B, C_out, L)


class ResNet1D(nn.Module):
    def __init__(self, cfg: ResNet1DConfig) -> None:
        super().__init__()
        widths = [cfg.n_inputs, cfg.channels] + [2 * cfg.channels] * (cfg.blocks - 1)
        self.blocks = nn.Sequential(*(Block(widths[i], widths[i + 1], cfg.dropout) for i in range(cfg.blocks)))
        self.head = Head(widths[-1], cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), oldest step first
        h = self.blocks(x.transpose(1, 2))  # (B, C, L)
        return self.head(h.mean(dim=2), ids)  # global average pooling: (B, C) → (B, n_outputs)


class ResNet1DModel(SequenceModel):
    name = "resnet1d"
    config = ResNet1DConfig
    network = ResNet1D
    fast_test = {"seq_len": 4, "channels": 4, "blocks": 1}
