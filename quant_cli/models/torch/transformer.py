"""transformer: a pre-norm encoder with a causal mask over the window.

Positions are learned (one vector per window step) or rotary (RoPE on queries and keys). The
window is summarised by its last token (the prediction row, which attends to every earlier row)
or by attention pooling (a learned query over all steps — all of them at or before t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between, choice
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head


@dataclass
class TransformerConfig(SequenceConfig):
    d_model: int = param(32, "width of every token (heads x head width)", at_least(2))
    heads: int = param(4, "attention heads; d_model must split into them", at_least(1))
    layers: int = param(2, "encoder layers", between(1, 32))
    ff_mult: int = param(2, "feed-forward width as a multiple of d_model", at_least(1))
    positions: str = param(
        "learned",
        "learned (a vector per window step) or rotary (RoPE on queries and keys)",
        choice("learned", "rotary"),
    )
    pooling: str = param(
        "last", "window summary: the last token, or attention pooling over every step", choice("last", "attention")
    )
    checkpoint: bool = param(False, "recompute each layer's activations in backward (less memory, same results)")


def check_heads(model: str, d_model: int, heads: int, rotary: bool = True) -> None:
    """d_model splits into `heads` heads, each of an even width under rotary positions (they rotate pairs)."""
    if d_model % heads or (rotary and (d_model // heads) % 2):
        raise ModelError(
            f"model '{model}': d_model {d_model} must split into {heads} heads"
            f"{' of an even width (rotary positions)' if rotary else ''}; change model.params.d_model or heads"
        )


def rotary(x: torch.Tensor) -> torch.Tensor:
    """RoPE over (B, h, L, d) with d even."""
    _, _, length, dim = x.shape
    freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))  # (d/2,)
    angle = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freq[None, :]  # (L, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads, self.rotary = cfg.heads, cfg.positions == "rotary"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        # Dropout on the output, not on the attention weights: without it SDPA runs its fused kernel
        # and never stores the (B, h, L, L) weights and mask (~half the activation memory on CPU).
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 × (B, L, D)
        q, k, v = (t.view(b, length, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, L, d)
        if self.rotary:
            q, k = rotary(q), rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, L, d)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, length, d)))  # (B, L, D)


class Layer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # (B, L, D)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.position = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model)) if cfg.positions == "learned" else None
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.query = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.pooling == "attention" else None
        self.head = Head(cfg.d_model, cfg)
        self.checkpoint = cfg.checkpoint

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states (B, L, F) → (B, L, D), causal (what `qfactory pretrain` trains)."""
        h = self.embed(x)  # (B, L, D)
        if self.position is not None:
            h = h + self.position[-h.shape[1] :]
        recompute = self.checkpoint and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            # checkpoint keeps only the layer's input; its RNG state is replayed, so dropout masks match
            h = checkpoint(layer, h, use_reentrant=False) if recompute else layer(h)  # (B, L, D)
        return self.norm(h)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F)
        h = self.encode(x)
        if self.query is None:
            return self.head(h[:, -1], ids)  # last token: (B, n_outputs)
        weights = torch.softmax(h @ self.query, dim=1)  # (B, L)
        return self.head((weights[:, :, None] * h).sum(dim=1), ids)


class TransformerModel(SequenceModel):
    name = "transformer"
    config = TransformerConfig
    network = Transformer
    fast_test = {"seq_len": 4, "d_model": 16, "heads": 2, "layers": 1}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        check_heads("transformer", p["d_model"], p["heads"], rotary=p["positions"] == "rotary")
