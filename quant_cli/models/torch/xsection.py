"""xsection: a cross-sectional model — every symbol at one timestamp scored together.

Each symbol's window (its last seq_len rows, ending at t) is encoded by a GRU (the hidden state at
the last step); the encodings of the symbols scored at the same t then attend to each other
(pre-norm multi-head self-attention across symbols, no positions: the symbols are a set, and a
padding mask hides the slots of symbols absent at t); a head gives one score per symbol.

Nothing crosses time: every window ends at t, and attention runs only among rows with the same
timestamp code (`group`), so a score at t reads bars at or before t only, whatever else shares
its batch. The batch is built by the one loop's timestamp sampler (`Samples.batches` with
`cross_section`): one or several whole timestamps, shuffled in training. The cross-section of a
row is the set of rows scored with it at the same t that have a full window (training: the
training rows of that t; a bundle or server: the request's symbols at t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.panel import PanelRows, as_panel_rows
from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head


@dataclass
class XSectionConfig(SequenceConfig):
    hidden: int = param(32, "width of each symbol's window encoding (GRU state) and of the attention", at_least(1))
    heads: int = param(4, "attention heads across the symbols of a timestamp (must divide hidden)", at_least(1))
    layers: int = param(1, "attention layers across symbols", between(1, 8))
    ff_mult: int = param(2, "feed-forward width / hidden in each attention layer", between(1, 16))


def sections(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Where each row sits in a (T, S) grid of its batch's timestamps × symbols: (order, slot, pos,
    T, S) with rows `order` (sorted by timestamp, stable) at `[slot, pos]`."""
    order = torch.argsort(group, stable=True)
    g = group[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    slot = torch.cumsum(first.long(), 0) - 1  # (B,) timestamp index in the batch
    start = torch.nonzero(first).squeeze(1)  # (T,) first sorted row of each timestamp
    pos = torch.arange(len(g), device=g.device) - start[slot]  # (B,) place within its timestamp
    counts = torch.diff(torch.cat([start, start.new_tensor([len(g)])]))
    return order, slot, pos, len(start), int(counts.max())


class SymbolAttention(nn.Module):
    """Pre-norm residual block over the (T, S, H) grid: attention among the S symbols of each
    timestamp (padding slots masked as keys), then a feed-forward layer on each symbol."""

    def __init__(self, cfg: XSectionConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.hidden), nn.LayerNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.ff = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.ff_mult * cfg.hidden), nn.GELU(), nn.Linear(cfg.ff_mult * cfg.hidden, cfg.hidden)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # z: (T, S, H); present: (T, S) bool, False on padding slots
        T, S, H = z.shape
        q, k, v = self.qkv(self.norm1(z)).view(T, S, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / (H // self.heads) ** 0.5  # (T, heads, S, S)
        att = att.masked_fill(~present[:, None, None, :], float("-inf"))  # no symbol attends to an absent one
        mixed = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(T, S, H)  # (T, S, H)
        z = z + self.drop(self.proj(mixed))
        return z + self.drop(self.ff(self.norm2(z)))


class XSection(nn.Module):
    def __init__(self, cfg: XSectionConfig) -> None:
        super().__init__()
        self.rnn = nn.GRU(cfg.n_inputs, cfg.hidden, batch_first=True)
        self.blocks = nn.ModuleList(SymbolAttention(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        self.head = Head(cfg.hidden, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None, group: torch.Tensor | None = None):
        # x: (B, L, F), each row's window ending at its t; group: (B,) timestamp codes (None: each row alone)
        out, _ = self.rnn(x)
        h = out[:, -1]  # (B, H): each symbol's own window encoding
        if group is None:
            group = torch.arange(len(h), device=h.device)
        order, slot, pos, T, S = sections(group)
        grid = h.new_zeros(T, S, h.shape[1])  # (T, S, H)
        grid[slot, pos] = h[order]
        present = torch.zeros(T, S, dtype=torch.bool, device=h.device)
        present[slot, pos] = True
        for block in self.blocks:
            grid = block(grid, present)
        mixed = torch.empty_like(h)
        mixed[order] = grid[slot, pos]  # (B, H) back in the batch's row order
        return self.head(self.norm(mixed), ids)  # (B, n_outputs)


def positional_ts(symbols: np.ndarray | None, n: int) -> np.ndarray:
    """Without timestamps, each symbol's rows in the order given are its history: the k-th row of
    every symbol is one cross-section (timestamp k)."""
    keys = np.zeros(n, dtype=str) if symbols is None else np.asarray(symbols).astype(str)
    order = np.argsort(keys, kind="stable")
    first = np.r_[True, keys[order][1:] != keys[order][:-1]] if n else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    ts = np.empty(n, dtype=np.int64)
    ts[order] = np.arange(n) - start
    return ts.astype("datetime64[D]").astype("datetime64[us]")


def _panel_rows(X, symbols, ts=None) -> PanelRows:
    if isinstance(X, PanelRows):
        return X
    return as_panel_rows(X, symbols, positional_ts(symbols, len(X)) if ts is None else ts)


class XSectionModel(SequenceModel):
    name = "xsection"
    config = XSectionConfig
    network = XSection
    cross_section = True
    fast_test = {"seq_len": 4, "hidden": 16, "heads": 2}

    def _check_architecture(self) -> None:
        hidden, heads = self.params["hidden"], self.params["heads"]
        if hidden % heads:
            raise ModelError(
                f"model 'xsection': model.params.heads {heads} must divide model.params.hidden {hidden}; "
                "change one of them"
            )
        if self.loop.loss == "pnl":
            raise ModelError(
                "train.loss 'pnl' scores each symbol's previous window alone, but model 'xsection' scores a "
                "symbol only within its timestamp's cross-section; use train.loss = 'mse', 'huber' or 'sharpe'"
            )

    # A plain matrix without timestamps: rows at the same position of their symbol form a cross-section.
    def fit(self, X, y, *, feature_names, symbols=None, ts=None, X_val=None, symbols_val=None, **kwargs):
        X = _panel_rows(X, symbols, ts)
        X_val = None if X_val is None else _panel_rows(X_val, symbols_val)
        return super().fit(X, y, feature_names=feature_names, ts=ts, X_val=X_val, **kwargs)

    def predict(self, X, *, symbols=None) -> np.ndarray:
        return super().predict(_panel_rows(X, symbols))

    def predict_proba(self, X, *, symbols=None) -> np.ndarray:
        return super().predict_proba(_panel_rows(X, symbols))

    def _samples(self, rows, y=None, w=None):
        samples, mask = super()._samples(rows, y, w)
        samples.cross_section = True  # batches of whole timestamps; the net reads their codes
        return samples, mask

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from quant_cli.models.torch import distributed

        if distributed.current() is not None:
            raise ModelError(
                "model 'xsection' attends across the symbols of each timestamp, which a data-parallel share of a "
                "batch would split; train it in one process (leave out --nproc)"
            )
        super()._fit(train, y, val, y_val, sample_weight, early_stopping)
