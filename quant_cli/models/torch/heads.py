"""What every torch network shares: the symbol encodings and the output head (its config base,
`NetConfig`, is torch-free in config.py).

Symbol encodings (quant_cli.models.encoding) inside a network, from the row's symbol id (0 = a
symbol not seen at training, kept neutral under `unseen_symbols = "neutral"`):
- one_hot:   a fixed 0/1 vector over the training symbols (all zeros for id 0);
- index:     the id as a category: a learned scalar per symbol (id 0 pinned to 0);
- embedding: a learned `embedding_dim` vector per symbol (id 0 pinned to zeros).
The encoding joins the network's summary of the window right before the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.models.torch.config import NetConfig


class SymbolInput(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.kind, self.n = cfg.symbol_kind, cfg.n_symbols
        dim = {"index": 1, "embedding": cfg.embedding_dim}.get(cfg.symbol_kind)
        self.table = nn.Embedding(cfg.n_symbols + 1, dim, padding_idx=0) if dim else None
        self.width = {"none": 0, "one_hot": cfg.n_symbols}.get(cfg.symbol_kind, dim or 0)

    def forward(self, h: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """h (B, H) → (B, H + width)."""
        if self.kind == "none":
            return h
        code = F.one_hot(ids, self.n + 1)[:, 1:].to(h.dtype) if self.table is None else self.table(ids).to(h.dtype)
        return torch.cat([h, code], dim=1)


class Head(nn.Module):
    """Summary (B, H) and symbol ids → (B, n_outputs)."""

    def __init__(self, width: int, cfg: NetConfig) -> None:
        super().__init__()
        self.symbols = SymbolInput(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(width + self.symbols.width, cfg.n_outputs)

    def forward(self, h: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.drop(self.symbols(h, ids)))
