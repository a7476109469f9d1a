"""The tabular multilayer perceptron: one row in, no window."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quant_cli.models.torch.heads import NetConfig, SymbolInput


@dataclass
class MLPConfig(NetConfig):
    hidden: tuple[int, ...] = (64, 32)


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.symbols = SymbolInput(cfg)  # the symbol joins the inputs (one_hot arrives as columns)
        width, layers = cfg.n_inputs + self.symbols.width, []
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, cfg.n_outputs)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, F) float32; ids: (B,) int64
        return self.head(self.body(self.symbols(x, ids)))  # (B, n_outputs)
