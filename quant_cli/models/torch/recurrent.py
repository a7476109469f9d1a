"""lstm and gru: one recurrent network over the window, the cell is a parameter the model class fixes.

The window (oldest step first) runs through a stacked LSTM or GRU; the hidden state at the last
step (the row scored, which has seen every earlier step and nothing later) feeds the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RecurrentConfig(SequenceConfig):
    hidden: int = param(64, "width of the recurrent state", at_least(1))
    layers: int = param(1, "stacked recurrent layers (dropout applies between them)", between(1, 16))
    cell: str = "lstm"  # lstm or gru: fixed by the model class, not a parameter


class Recurrent(nn.Module):
    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__()
        self.rnn = CELLS[cfg.cell](
            cfg.n_inputs, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.head = Head(cfg.hidden, cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states (B, L, F) → (B, L, H), causal (what `qfactory pretrain` trains)."""
        return self.rnn(x)[0]

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), oldest step first; the last step is the prediction row
        return self.head(self.encode(x)[:, -1], ids)  # (B, n_outputs)


class LSTMModel(SequenceModel):
    name = "lstm"
    config = RecurrentConfig
    network = Recurrent
    fixed = {"cell": "lstm"}
    fast_test = {"seq_len": 4, "hidden": 16}


class GRUModel(LSTMModel):
    name = "gru"
    fixed = {"cell": "gru"}
