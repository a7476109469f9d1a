"""hybrid: patch tokens through blocks of dilated causal convolution, causal rotary attention and a
state-space mixer.

- Patch embedding: the window is cut into non-overlapping patches of `patch_len` steps, aligned
  so that the last patch ends at the row scored (a window that does not divide is zero-padded at
  its oldest end); each patch becomes one token. A token covers only steps at or before its last
  step, and every later stage is causal over tokens, so token j never sees a step after its own.
- Block i (pre-norm, residual): a causal temporal convolution with dilation 2**(i mod
  dilation_cycle) (1, 2, 4, ... repeating), causal self-attention with rotary positions, a diagonal
  state-space mixer (the `state_space` layer: FFT convolution in training, recurrence when scoring),
  and a feed-forward layer.
- The last token (the patch holding the row scored) feeds the head.

Receptive field: the attention and the state-space mixer see every earlier token; the convolutions
of all blocks together see `patch_len · (1 + (kernel_size - 1) · Σ dilations)` steps
(`conv_receptive_field`). A dilation whose taps reach past the window's first token would read
only padding, so the model refuses it against seq_len (`_check_architecture`).
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
from quant_cli.models.torch.state_space import SSMLayer
from quant_cli.models.torch.tcn import CausalConv
from quant_cli.models.torch.transformer import Attention, TransformerConfig, check_heads


@dataclass
class HybridConfig(SequenceConfig):
    patch_len: int = param(4, "window steps per patch token (the last patch ends at the row scored)", between(1, 512))
    d_model: int = param(32, "width of every token (heads x an even head width)", at_least(2))
    heads: int = param(4, "attention heads", at_least(1))
    layers: int = param(3, "blocks (convolution, attention, state-space mixer, feed-forward)", between(1, 32))
    kernel_size: int = param(3, "taps of every causal convolution", between(2, 64))
    dilation_cycle: int = param(4, "block i dilates its convolution by 2**(i mod dilation_cycle)", between(1, 16))
    state: int = param(16, "state size per channel of the state-space mixer (even)", between(2, 256))
    ff_mult: int = param(2, "feed-forward width as a multiple of d_model", at_least(1))


def dilations(layers: int, cycle: int) -> list[int]:
    return [2 ** (i % cycle) for i in range(layers)]


def tokens(seq_len: int, patch_len: int) -> int:
    return math.ceil(seq_len / patch_len)


def conv_receptive_field(patch_len: int, kernel_size: int, layers: int, cycle: int) -> int:
    """Window steps the convolutions of all blocks together see."""
    return patch_len * (1 + (kernel_size - 1) * sum(dilations(layers, cycle)))


class PatchEmbed(nn.Module):
    """(B, L, F) → (B, T, D), T = ceil(L / P); the last patch ends at the last step."""

    def __init__(self, n_inputs: int, patch_len: int, width: int) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.proj = nn.Linear(n_inputs * patch_len, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, f = x.shape
        pad = -length % self.patch_len
        x = F.pad(x, (0, 0, pad, 0))  # zeros before the oldest step: (B, L + pad, F)
        return self.proj(x.reshape(b, (length + pad) // self.patch_len, self.patch_len * f))


class Block(nn.Module):
    def __init__(self, cfg: HybridConfig, dilation: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln_conv, self.ln_attn, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.conv = CausalConv(d, d, cfg.kernel_size, dilation)
        self.attn = Attention(TransformerConfig(d_model=d, heads=cfg.heads, positions="rotary", dropout=cfg.dropout))
        self.mixer = SSMLayer(d, cfg.state, cfg.dropout)  # pre-norm and residual itself
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d), nn.Dropout(cfg.dropout)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D)
        x = x + self.drop(F.gelu(self.conv(self.ln_conv(x).transpose(1, 2)).transpose(1, 2)))
        x = x + self.attn(self.ln_attn(x))
        x = self.mixer(x)
        return x + self.ff(self.ln_ff(x))  # (B, T, D)


class Hybrid(nn.Module):
    def __init__(self, cfg: HybridConfig) -> None:
        super().__init__()
        self.embed = PatchEmbed(cfg.n_inputs, cfg.patch_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, d) for d in dilations(cfg.layers, cfg.dilation_cycle))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = Head(cfg.d_model, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, -1], ids)  # the token holding the row scored: (B, n_outputs)


class HybridModel(SequenceModel):
    name = "hybrid"
    config = HybridConfig
    network = Hybrid
    fast_test = {"seq_len": 6, "patch_len": 2, "d_model": 8, "heads": 2, "layers": 1, "kernel_size": 2, "state": 4}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        check_heads("hybrid", p["d_model"], p["heads"])
        if p["state"] % 2:
            raise ModelError(f"model 'hybrid': state {p['state']} must be even; change model.params.state")
        n_tokens, widest = tokens(p["seq_len"], p["patch_len"]), max(dilations(p["layers"], p["dilation_cycle"]))
        if (p["kernel_size"] - 1) * widest >= n_tokens:
            raise ModelError(
                f"model 'hybrid': a convolution with dilation {widest} and kernel_size {p['kernel_size']} reaches "
                f"{(p['kernel_size'] - 1) * widest} tokens back, past the {n_tokens} tokens of seq_len {p['seq_len']} "
                f"(patch_len {p['patch_len']}), so its taps would read only padding; lower model.params."
                "dilation_cycle, kernel_size or patch_len, or raise seq_len"
            )
