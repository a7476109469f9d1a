"""tcn: dilated causal 1-d convolutions in residual blocks (Bai et al. 2018).

Block i has two convolutions with dilation 2**i; the receptive field of `levels` blocks is
1 + 2·(kernel_size - 1)·(2**levels - 1) steps (`receptive_field`), which the model checks against seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head


@dataclass
class TCNConfig(SequenceConfig):
    channels: int = param(32, "convolution channels of every level", at_least(1))
    levels: int = param(4, "residual blocks; block i dilates its convolutions by 2**i", between(1, 16))
    kernel_size: int = param(3, "taps of every causal convolution", between(2, 64))


def receptive_field(levels: int, kernel_size: int) -> int:
    """Steps a tcn of `levels` residual blocks (two dilated convolutions each, dilation 2**i) sees."""
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


class CausalConv(nn.Conv1d):
    """Left-padded: output step t sees input steps <= t only."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int) -> None:
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))  # (B, C, L) → (B, C_out, L)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = CausalConv(c_in, c_out, kernel_size, dilation)
        self.conv2 = CausalConv(c_out, c_out, kernel_size, dilation)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.gelu(self.conv1(x)))
        h = self.drop(F.gelu(self.conv2(h)))
        return F.gelu(h + self.skip(x))  # (B, C_out, L)


class TCN(nn.Module):
    def __init__(self, cfg: TCNConfig) -> None:
        super().__init__()
        widths = [cfg.n_inputs] + [cfg.channels] * cfg.levels
        self.blocks = nn.Sequential(
            *(Block(widths[i], widths[i + 1], cfg.kernel_size, 2**i, cfg.dropout) for i in range(cfg.levels))
        )
        self.head = Head(cfg.channels, cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states (B, L, F) → (B, L, C), causal (what `qfactory pretrain` trains)."""
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F)
        return self.head(self.encode(x)[:, -1], ids)  # the last (prediction) step: (B, n_outputs)


class TCNModel(SequenceModel):
    name = "tcn"
    config = TCNConfig
    network = TCN
    fast_test = {"seq_len": 4, "channels": 8, "levels": 2}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        field = receptive_field(p["levels"], p["kernel_size"])
        if field < p["seq_len"]:
            raise ModelError(
                f"model 'tcn': the receptive field of {p['levels']} levels with kernel_size "
                f"{p['kernel_size']} is {field} steps, shorter than seq_len {p['seq_len']}, so the oldest "
                "steps would be ignored; raise model.params.levels or kernel_size, or lower seq_len"
            )
