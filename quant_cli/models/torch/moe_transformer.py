"""moe_transformer: a causal pre-norm transformer whose feed-forward layers are top-k routed experts
(Switch / GShard style).

- Routing: a linear router scores `experts` per token; each token goes to its `top_k` experts,
  weighted by their router probabilities renormalised over the chosen k.
- Capacity (training only): each expert takes at most ceil(capacity_factor · tokens · top_k /
  experts) tokens of a batch, first come first served in (window, step) order, first choices
  before second ones; overflowing assignments are dropped (the residual carries the token on).
  When scoring, every token goes to its top-k experts with no capacity, so a row's score never
  depends on the other rows of its batch (a capacity at scoring would let one window's later
  bars push another's token out: a leak through the batch).
- Load balancing: the auxiliary loss aux_weight · experts · Σ_e f_e · P_e (f_e: share of the
  batch's routed assignments that chose expert e, P_e: its mean router probability) is added to the
  training loss through the loop's `auxiliary_loss` hook.
- Expert usage: each epoch's share of routed assignments per expert and layer, and the share
  dropped by the capacity, go to history.json (`expert_usage`, `expert_dropped`) through the loop's
  `epoch_stats` hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head
from quant_cli.models.torch.transformer import Attention, TransformerConfig, check_heads


@dataclass
class MoETransformerConfig(SequenceConfig):
    d_model: int = param(32, "width of every token (heads x an even head width)", at_least(2))
    heads: int = param(4, "attention heads (rotary positions)", at_least(1))
    layers: int = param(2, "encoder layers, each with a routed expert feed-forward", between(1, 32))
    experts: int = param(4, "feed-forward experts per layer", between(1, 64))
    top_k: int = param(2, "experts each token is routed to", between(1, 64))
    capacity_factor: float = param(
        1.25, "training capacity per expert, as a multiple of an even share", between(0.1, 64)
    )
    aux_weight: float = param(0.01, "weight of the load-balancing auxiliary loss", between(0, 10))
    ff_mult: int = param(2, "expert width as a multiple of d_model", at_least(1))


class Experts(nn.Module):
    """(B, L, D) → (B, L, D): each token through its top-k experts."""

    def __init__(self, cfg: MoETransformerConfig) -> None:
        super().__init__()
        d, self.k, self.capacity_factor, self.aux_weight = cfg.d_model, cfg.top_k, cfg.capacity_factor, cfg.aux_weight
        self.router = nn.Linear(d, cfg.experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
            for _ in range(cfg.experts)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.aux = None  # the latest training forward's balancing loss
        self.routed = torch.zeros(cfg.experts, dtype=torch.float64)  # this epoch's kept assignments per expert
        self.dropped = 0.0  # this epoch's assignments over capacity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        tokens = x.reshape(-1, d)  # (N, D)
        probs = torch.softmax(self.router(tokens).float(), dim=-1)  # (N, E)
        weight, chosen = probs.topk(self.k, dim=-1)  # (N, k) each
        weight = weight / weight.sum(-1, keepdim=True)
        n_experts = probs.shape[1]
        onehot = F.one_hot(chosen, n_experts).float()  # (N, k, E)
        keep = torch.ones_like(weight, dtype=torch.bool)  # (N, k)
        if self.training:
            capacity = math.ceil(self.capacity_factor * tokens.shape[0] * self.k / n_experts)
            # position of each assignment in its expert's queue: first choices of all tokens, then second ones, ...
            order = onehot.transpose(0, 1).reshape(-1, n_experts)  # (k·N, E)
            position = (order.cumsum(0) - order).reshape(self.k, -1, n_experts).transpose(0, 1)  # (N, k, E)
            keep = (position * onehot).sum(-1) < capacity
            share = onehot.mean(dim=(0, 1))  # f_e
            self.aux = self.aux_weight * n_experts * (share * probs.mean(0)).sum()
            self.routed += (onehot * keep[..., None]).sum(dim=(0, 1)).detach().double().cpu()
            self.dropped += float((~keep).sum())
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero((chosen == e) & keep, as_tuple=True)
            if len(token):
                gate = weight[token, slot, None].to(tokens.dtype)
                out = out.index_add(0, token, (gate * expert(tokens[token])).to(out.dtype))
        return self.drop(out).reshape(b, length, d)

    def take_stats(self) -> tuple[list[float], float]:
        """(share of kept assignments per expert, share dropped) since the last call; resets the counters."""
        total = float(self.routed.sum()) + self.dropped
        usage = (self.routed / max(total - self.dropped, 1.0)).tolist()
        dropped = self.dropped / total if total else 0.0
        self.routed.zero_()
        self.dropped = 0.0
        return [round(u, 6) for u in usage], round(dropped, 6)


class Layer(nn.Module):
    def __init__(self, cfg: MoETransformerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = Attention(
            TransformerConfig(d_model=cfg.d_model, heads=cfg.heads, positions="rotary", dropout=cfg.dropout)
        )
        self.moe = Experts(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.moe(self.ln2(x))  # (B, L, D)


class MoETransformer(nn.Module):
    def __init__(self, cfg: MoETransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = Head(cfg.d_model, cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states (B, L, F) → (B, L, D), causal (what `qfactory pretrain` trains)."""
        h = self.embed(x)  # (B, L, D)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encode(x)[:, -1], ids)  # the last (prediction) token: (B, n_outputs)

    # ---- the training loop's hooks (models/torch/loop.py) ----

    def auxiliary_loss(self) -> torch.Tensor:
        """The load-balancing loss of the latest training forward, summed over layers."""
        return sum(layer.moe.aux for layer in self.layers)

    def epoch_stats(self) -> dict:
        stats = [layer.moe.take_stats() for layer in self.layers]
        return {"expert_usage": [usage for usage, _ in stats], "expert_dropped": [dropped for _, dropped in stats]}


class MoETransformerModel(SequenceModel):
    name = "moe_transformer"
    config = MoETransformerConfig
    network = MoETransformer
    fast_test = {"seq_len": 4, "d_model": 8, "heads": 2, "layers": 1, "experts": 2, "top_k": 1}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        check_heads("moe_transformer", p["d_model"], p["heads"])
        if p["top_k"] > p["experts"]:
            raise ModelError(
                f"model 'moe_transformer': top_k {p['top_k']} is above experts {p['experts']}; "
                "lower model.params.top_k or raise experts"
            )
