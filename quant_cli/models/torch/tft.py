"""tft: the Temporal Fusion Transformer (Lim, Arık, Loeff & Pfister, 2021), a path model with static and
known-future covariates.

Three kinds of input, each through its own variable selection network (VSN):
- past: the window's feature channels (and raw-bar channels), each a variable embedded by its own linear map;
- static: the symbol encoding (`model.symbol_encoding`, any of the four) and the static text columns
  (`model.static_columns`, e.g. sector), each an embedding with id 0 — a value not seen in training —
  pinned to zeros;
- known future: for each of the h bars after t, the step number and the calendar fields asked for in
  `model.known_future`, derived from t's timestamp and the bar calendar alone
  (quant_cli.models.covariates), never from later rows.

Static covariate encoders turn the selected static vector into four context vectors: c_s conditions the
past and future VSNs, c_h and c_c start the LSTM, c_e enriches the temporal features. An LSTM encoder
reads the past, an LSTM decoder continues over the h future steps; a gated skip and LayerNorm wrap them.
Static enrichment (a GRN with c_e), then interpretable multi-head attention — per-head queries and keys,
one value projection shared by every head, the heads' attention weights averaged — under a causal mask
over the L + h positions, a gated residual, a position-wise GRN, and a gated skip over the whole temporal
block. A linear map of each future position gives that step's one-bar return: the path (n_outputs = the
label's horizon); the model's score is the path compounded.

Not kept: quantile outputs (the path is fit by the loop's mse/huber loss), known inputs on past steps (the
past VSN reads the observed channels only), the paper's sizes. Covariates reach the network as one int64
tensor per sample in place of the symbol ids (see `TFTModel._covariates`): the symbol id, the static ids,
then the h × K calendar codes, so the one training loop carries them unchanged. Variable importances (the
mean selection weights over the training windows) are written to `importance.json` beside the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.io import read_json, write_json_atomic
from quant_cli.models.covariates import FIELD_SIZES, Calendar, StaticCodes, fit_calendar, future_fields
from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import SymbolInput


@dataclass
class TFTConfig(SequenceConfig):
    hidden: int = param(32, "width d of every embedding, GRN, LSTM and attention", at_least(2))
    heads: int = param(
        4, "attention heads (one value projection shared by all); hidden must split into them", at_least(1)
    )
    lstm_layers: int = param(1, "layers of the LSTM encoder and of the decoder", between(1, 4))
    static_sizes: list[int] = field(default_factory=list)  # ids per static column (values + the unknown 0); at fit
    future_fields: list[str] = field(default_factory=list)  # model.known_future, in order; at fit


class GLU(nn.Module):
    """Gated linear unit: σ(W x + b) ⊙ (V x + c), (..., d_in) → (..., d_out)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc(x).chunk(2, dim=-1)
        return torch.sigmoid(gate) * value


class GRN(nn.Module):
    """Gated residual network: LayerNorm(skip(a) + GLU(W1 ELU(W2 a + W3 c))), (..., d_in) → (..., d_out);
    the context c (B, d_context) broadcasts over any time axis of a."""

    def __init__(self, d_in: int, d_out: int, d_hidden: int, dropout: float, d_context: int = 0) -> None:
        super().__init__()
        self.fc2 = nn.Linear(d_in, d_hidden)
        self.context = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc1 = nn.Linear(d_hidden, d_hidden)
        self.drop = nn.Dropout(dropout)
        self.gate = GLU(d_hidden, d_out)
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.norm = nn.LayerNorm(d_out)

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc2(a)
        if c is not None and self.context is not None:
            ctx = self.context(c)  # (B, d_hidden)
            h = h + ctx.view(ctx.shape[0], *([1] * (h.dim() - 2)), ctx.shape[-1])
        h = self.fc1(F.elu(h))
        return self.norm(self.skip(a) + self.gate(self.drop(h)))


class VariableGRNs(nn.Module):
    """n GRNs side by side, one per variable (each its own weights), as batched matmuls rather than a loop
    of n small modules: (..., n, d) → (..., n, d)."""

    def __init__(self, n: int, d: int, dropout: float) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(d)
        self.w2, self.b2 = nn.Parameter(torch.empty(n, d, d).uniform_(-scale, scale)), nn.Parameter(torch.zeros(n, d))
        self.w1, self.b1 = nn.Parameter(torch.empty(n, d, d).uniform_(-scale, scale)), nn.Parameter(torch.zeros(n, d))
        self.wg = nn.Parameter(torch.empty(n, d, 2 * d).uniform_(-scale, scale))  # the GLU's gate and value
        self.bg = nn.Parameter(torch.zeros(n, 2 * d))
        self.gain, self.shift = nn.Parameter(torch.ones(n, d)), nn.Parameter(torch.zeros(n, d))  # per-variable norm
        self.drop = nn.Dropout(dropout)

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        h = F.elu(torch.einsum("...nd,nde->...ne", xi, self.w2) + self.b2)
        h = self.drop(torch.einsum("...nd,nde->...ne", h, self.w1) + self.b1)
        gate, value = (torch.einsum("...nd,nde->...ne", h, self.wg) + self.bg).chunk(2, dim=-1)
        out = F.layer_norm(xi + torch.sigmoid(gate) * value, xi.shape[-1:])
        return out * self.gain + self.shift


class VariableSelection(nn.Module):
    """n embedded variables (..., n, d) → their weighted sum after a GRN each (..., d), and the weights (..., n)."""

    def __init__(self, n: int, d: int, dropout: float, context: bool) -> None:
        super().__init__()
        self.variables = VariableGRNs(n, d, dropout)
        self.weights = GRN(n * d, n, d, dropout, d_context=d if context else 0)

    def forward(self, xi: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.softmax(self.weights(xi.flatten(-2), c), dim=-1)  # (..., n)
        return (v.unsqueeze(-1) * self.variables(xi)).sum(-2), v  # (..., d), (..., n)


class InterpretableAttention(nn.Module):
    """Multi-head attention whose heads share one value projection and whose weights are averaged over the
    heads (so one (T, T) matrix explains the output), under a causal mask: position i reads positions ≤ i."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d // heads
        self.q = nn.Linear(d, heads * self.d_head)
        self.k = nn.Linear(d, heads * self.d_head)
        self.v = nn.Linear(d, self.d_head)  # shared by every head
        self.out = nn.Linear(self.d_head, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, d)
        q = self.q(x).view(B, T, self.heads, self.d_head).transpose(1, 2)  # (B, h, T, dh)
        k = self.k(x).view(B, T, self.heads, self.d_head).transpose(1, 2)  # (B, h, T, dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, h, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        weights = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1).mean(1)  # (B, T, T)
        return self.drop(self.out(weights @ self.v(x)))  # (B, T, dh) → (B, T, d)


class GatedSkip(nn.Module):
    """LayerNorm(skip + GLU(dropout(x))): the gated add & norm around each TFT block."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.drop, self.gate, self.norm = nn.Dropout(dropout), GLU(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(skip + self.gate(self.drop(x)))


class TFT(nn.Module):
    def __init__(self, cfg: TFTConfig) -> None:
        super().__init__()
        d, drop = cfg.hidden, cfg.dropout
        self.P, self.L, self.H = cfg.n_inputs, cfg.seq_len, cfg.n_outputs
        self.S, self.K = len(cfg.static_sizes), len(cfg.future_fields)
        # ---- embeddings: one d-vector per variable
        self.past_weight = nn.Parameter(torch.randn(self.P, d) * 0.1)  # each past channel: x·w_j + b_j
        self.past_bias = nn.Parameter(torch.zeros(self.P, d))
        self.symbols = SymbolInput(cfg)
        self.symbol_proj = nn.Linear(self.symbols.width, d) if self.symbols.width else None
        self.static_tables = nn.ModuleList(nn.Embedding(size, d, padding_idx=0) for size in cfg.static_sizes)
        self.constant = nn.Parameter(torch.zeros(1, d)) if self.n_static == 0 else None  # no static input at all
        self.step = nn.Embedding(self.H, d)  # the future step 1..h is itself known in advance
        self.future_tables = nn.ModuleList(nn.Embedding(FIELD_SIZES[f], d) for f in cfg.future_fields)
        # ---- selection and static context
        self.static_vsn = VariableSelection(max(self.n_static, 1), d, drop, context=False)
        self.contexts = nn.ModuleList(GRN(d, d, d, drop) for _ in range(4))  # c_s, c_e, c_h, c_c
        self.past_vsn = VariableSelection(self.P, d, drop, context=True)
        self.future_vsn = VariableSelection(1 + self.K, d, drop, context=True)
        # ---- temporal processing
        lstm_drop = drop if cfg.lstm_layers > 1 else 0.0
        self.encoder = nn.LSTM(d, d, cfg.lstm_layers, batch_first=True, dropout=lstm_drop)
        self.decoder = nn.LSTM(d, d, cfg.lstm_layers, batch_first=True, dropout=lstm_drop)
        self.lstm_skip = GatedSkip(d, drop)
        self.enrich = GRN(d, d, d, drop, d_context=d)
        self.attention = InterpretableAttention(d, cfg.heads, drop)
        self.attention_skip = GatedSkip(d, drop)
        self.feed_forward = GRN(d, d, d, drop)
        self.block_skip = GatedSkip(d, 0.0)
        self.out = nn.Linear(d, 1)
        self.record = False  # when set, forward keeps each batch's selection weights in `selected`
        self.selected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_static(self) -> int:
        return (1 if self.symbol_proj is not None else 0) + self.S

    def _static(self, symbol: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, n_static or 1, d) embedded static variables."""
        parts = []
        if self.symbol_proj is not None:
            parts.append(self.symbol_proj(self.symbols(torch.zeros(len(symbol), 0, device=symbol.device), symbol)))
        parts += [table(ids[:, j]) for j, table in enumerate(self.static_tables)]
        if not parts:
            return self.constant.expand(len(symbol), 1, -1)
        return torch.stack(parts, dim=1)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, P); ids: (B, 1 + S + H·K) int64 — symbol id, static ids, future calendar codes
        B = x.shape[0]
        if ids is None:
            ids = torch.zeros(B, 1 + self.S + self.H * self.K, dtype=torch.int64, device=x.device)
        static_ids, codes = ids[:, 1 : 1 + self.S], ids[:, 1 + self.S :].view(B, self.H, self.K)
        static, w_static = self.static_vsn(self._static(ids[:, 0], static_ids))  # (B, d), (B, n_static)
        c_s, c_e, c_h, c_c = (grn(static) for grn in self.contexts)  # (B, d) each
        past = x.unsqueeze(-1) * self.past_weight + self.past_bias  # (B, L, P, d)
        past, w_past = self.past_vsn(past, c_s)  # (B, L, d), (B, L, P)
        future = [self.step.weight.expand(B, -1, -1)] + [t(codes[..., k]) for k, t in enumerate(self.future_tables)]
        future, w_future = self.future_vsn(torch.stack(future, dim=2), c_s)  # (B, H, d), (B, H, 1 + K)
        layers = self.encoder.num_layers
        state = (c_h.unsqueeze(0).repeat(layers, 1, 1).contiguous(), c_c.unsqueeze(0).repeat(layers, 1, 1).contiguous())
        encoded, state = self.encoder(past, state)  # (B, L, d)
        decoded, _ = self.decoder(future, state)  # (B, H, d)
        selected = torch.cat([past, future], dim=1)  # (B, L + H, d)
        temporal = self.lstm_skip(torch.cat([encoded, decoded], dim=1), selected)  # (B, L + H, d)
        enriched = self.enrich(temporal, c_e)
        attended = self.attention_skip(self.attention(enriched), enriched)
        fused = self.block_skip(self.feed_forward(attended), temporal)  # (B, L + H, d)
        if self.record:
            self.selected = (w_past.mean(1), w_static, w_future.mean(1))  # (B, P), (B, n_static), (B, 1 + K)
        return self.out(fused[:, self.L :]).squeeze(-1)  # (B, H): the path of one-bar returns (scaled)


class TFTModel(SequenceModel):
    name = "tft"
    config = TFTConfig
    network = TFT
    output = "path"
    tasks = ("regression",)
    static_covariates = True
    known_future = True
    fast_test = {"seq_len": 4, "hidden": 8, "heads": 2}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        hidden, heads = self.params["hidden"], self.params["heads"]
        if hidden % heads:
            raise ModelError(
                f"model.params.hidden = {hidden} does not split into model.params.heads = {heads}; "
                "make hidden a multiple of heads"
            )

    # ---- covariates: fitted on the training rows, packed in place of the symbol ids ------------------

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        panel, rows = train.X.panel, train.X.rows
        absent = [c for c in self.static_columns if c not in panel.statics]
        if absent:
            raise ModelError(
                f"model '{self.name}': model.static_columns names {absent[0]!r}, but the panel has no such column; "
                "train through a run (`qfactory train`), which reads it from the bars, or pass a Panel with statics"
            )
        self.calendar_ = fit_calendar(panel.ts[rows], panel.symbols[rows], panel.frequency)
        values = {c: panel.statics[c][rows] for c in self.static_columns}
        self.statics_ = StaticCodes.fit(self.static_columns, panel.symbols[rows], values)
        super()._fit(train, y, val, y_val, sample_weight, early_stopping)
        self.importance_ = self._importance(train)

    def _net_config(self, n_inputs: int) -> TFTConfig:
        config = super()._net_config(n_inputs)
        return replace(config, static_sizes=self.statics_.sizes, future_fields=list(self.known_future_fields))

    def _covariates(self, X, symbol_ids: np.ndarray | None) -> np.ndarray:
        """(n, 1 + S + H·K) int64 per row of X (PanelRows): its symbol id (0 without a symbol encoding),
        static ids (StaticCodes), and the calendar codes of the H bars after its timestamp."""
        n = len(X)
        symbol = np.zeros((n, 1), np.int64) if symbol_ids is None else np.asarray(symbol_ids).reshape(n, 1)
        values = {c: X.panel.statics[c][X.rows] for c in self.static_columns if c in X.panel.statics}
        static = self.statics_.ids(X.symbols, values)  # (n, S)
        future = future_fields(X.ts, self.calendar_, self.horizon_, self.known_future_fields).reshape(n, -1)
        return np.hstack([symbol, static, future]).astype(np.int64)

    def _samples(self, rows, y=None, w=None):
        import torch

        from quant_cli.models.torch.placement import to_device

        samples, mask = super()._samples(rows, y, w)
        samples.ids = to_device(self._covariates(rows.X, rows.ids)[mask], self.device_, torch.int64)
        return samples, mask

    # ---- variable importances --------------------------------------------------------------------------

    @torch.no_grad()
    def _importance(self, train) -> dict[str, dict[str, float]]:
        """Mean selection weight of each variable over the training windows (past, static, future)."""
        samples, _ = self._samples(train)
        net, totals = self.net_, None
        net.eval()
        net.record = True
        try:
            for idx in torch.arange(len(samples), device=samples.ends.device).split(1024):
                x, ids = samples.inputs(idx)
                net(x.to(self.device_), ids)
                sums = [w.double().sum(0).cpu() for w in net.selected]
                totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
        finally:
            net.record, net.selected = False, None
            self._release()
        names = self._variable_names(train.X.panel)
        return {
            kind: {name: round(float(v) / max(len(samples), 1), 6) for name, v in zip(names[kind], total)}
            for kind, total in zip(("past", "static", "future"), totals or [[], [], []])
        }

    def _variable_names(self, panel) -> dict[str, list[str]]:
        features = list(self.input_names_[: panel.n_features])
        past = {"features": features, "bars": list(panel.channels), "both": [*features, *panel.channels]}
        static = (["symbol"] if self.encoder_.kind != "none" else []) + list(self.static_columns)
        return {
            "past": past[self.params["inputs"]],
            "static": static or ["constant"],
            "future": ["step", *self.known_future_fields],
        }

    # ---- persistence: the fitted covariates and the importances beside the weights ---------------------

    def _save_native(self, folder) -> None:
        super()._save_native(folder)
        covariates = {"calendar": self.calendar_.to_json(), "statics": self.statics_.to_json()}
        write_json_atomic(folder / "covariates.json", covariates)
        write_json_atomic(folder / "importance.json", self.importance_)

    def _load_native(self, folder, meta: dict[str, Any]) -> None:
        covariates = read_json(folder / "covariates.json")
        self.calendar_ = Calendar.from_json(covariates["calendar"])
        self.statics_ = StaticCodes.from_json(covariates["statics"])
        self.importance_ = read_json(folder / "importance.json")
        super()._load_native(folder, meta)
