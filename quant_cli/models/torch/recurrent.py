"""lstm and gru: one recurrent module, the cell is a parameter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quant_cli.models.torch.heads import Head, NetConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RecurrentConfig(NetConfig):
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1


class Recurrent(nn.Module):
    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__()
        self.rnn = CELLS[cfg.cell](cfg.n_inputs, cfg.hidden, cfg.layers, batch_first=True,
                                   dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = Head(cfg.hidden, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), oldest step first; the last step is the prediction row
        out, _ = self.rnn(x)  # (B, L, H)
        return self.head(out[:, -1], ids)  # (B, n_outputs)
