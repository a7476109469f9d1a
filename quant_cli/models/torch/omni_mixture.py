"""omni_mixture: fine-resolution attention, coarse cross-scale attention over causally pooled
sequences, a gated state-space mixer and dilated causal convolutions, in residual pre-norm blocks.

Block i, over the step tokens (B, L, D):
- fine: causal self-attention with rotary positions over every step;
- coarse cross-scale: the steps are mean-pooled into patches of `pool` steps aligned so that the
  last patch ends at the row scored (zero-padded at the oldest end); step t attends only to the
  patches that END at or before t (plus a learned null token, so early steps always have a key) —
  pooling never hands a step the mean of bars after it;
- a gated state-space mixer: SSM(norm(x)) · sigmoid(W·norm(x)) (the `state_space` layer: FFT
  convolution in training, recurrence when scoring);
- a causal temporal convolution with dilation 2**(i mod dilation_cycle).
The last step feeds the head.
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
from quant_cli.models.torch.state_space import DiagonalSSM
from quant_cli.models.torch.tcn import CausalConv
from quant_cli.models.torch.transformer import Attention, TransformerConfig, check_heads


@dataclass
class OmniMixtureConfig(SequenceConfig):
    d_model: int = param(32, "width of every token (heads x an even head width)", at_least(2))
    heads: int = param(4, "attention heads (fine and coarse)", at_least(1))
    layers: int = param(2, "blocks (fine, coarse, gated state-space, dilated convolution)", between(1, 32))
    pool: int = param(4, "steps per coarse (pooled) token", between(2, 512))
    kernel_size: int = param(3, "taps of every causal convolution", between(2, 64))
    dilation_cycle: int = param(3, "block i dilates its convolution by 2**(i mod dilation_cycle)", between(1, 16))
    state: int = param(16, "state size per channel of the gated state-space mixer (even)", between(2, 256))


def causal_pool(x: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D) → coarse (B, T, D) means of `pool`-step patches (the last ends at step L-1), and each
    patch's last step (T,)."""
    b, length, d = x.shape
    pad = -length % pool
    padded = F.pad(x, (0, 0, pad, 0)).reshape(b, (length + pad) // pool, pool, d)
    ends = torch.arange(pool - 1 - pad, length, pool, device=x.device)  # last step of each patch
    return padded.mean(dim=2), ends


class CrossScale(nn.Module):
    """Step t attends to the pooled patches that end at or before t (and a learned null token)."""

    def __init__(self, cfg: OmniMixtureConfig) -> None:
        super().__init__()
        self.heads, self.pool = cfg.heads, cfg.pool
        self.q, self.kv = nn.Linear(cfg.d_model, cfg.d_model), nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.null = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.proj, self.drop = nn.Linear(cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        coarse, ends = causal_pool(x, self.pool)  # (B, T, D), (T,)
        coarse = torch.cat([self.null.expand(b, 1, d).to(x.dtype), coarse], dim=1)  # (B, 1 + T, D)
        steps = torch.arange(length, device=x.device)
        allowed = torch.cat(
            [torch.ones(length, 1, dtype=torch.bool, device=x.device), ends[None, :] <= steps[:, None]], dim=1
        )  # (L, 1 + T)
        k, v = self.kv(coarse).split(d, dim=2)
        q = self.q(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)  # (B, h, ·, d/h)

        y = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=allowed)  # (B, h, L, d/h)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, length, d)))


class Block(nn.Module):
    def __init__(self, cfg: OmniMixtureConfig, dilation: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(4))
        self.fine = Attention(TransformerConfig(d_model=d, heads=cfg.heads, positions="rotary", dropout=cfg.dropout))
        self.coarse = CrossScale(cfg)
        self.ssm, self.gate = DiagonalSSM(d, cfg.state), nn.Linear(d, d)
        self.conv = CausalConv(d, d, cfg.kernel_size, dilation)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D)
        x = x + self.fine(self.norms[0](x))
        x = x + self.coarse(self.norms[1](x))
        h = self.norms[2](x)
        x = x + self.drop(self.ssm(h).to(x.dtype) * torch.sigmoid(self.gate(h)))
        return x + self.drop(F.gelu(self.conv(self.norms[3](x).transpose(1, 2)).transpose(1, 2)))


class OmniMixture(nn.Module):
    def __init__(self, cfg: OmniMixtureConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, 2 ** (i % cfg.dilation_cycle)) for i in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = Head(cfg.d_model, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x)  # (B, L, D)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, -1], ids)  # the last (prediction) step: (B, n_outputs)


class OmniMixtureModel(SequenceModel):
    name = "omni_mixture"
    config = OmniMixtureConfig
    network = OmniMixture
    fast_test = {"seq_len": 6, "d_model": 8, "heads": 2, "layers": 1, "pool": 2, "kernel_size": 2, "state": 4}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        check_heads("omni_mixture", p["d_model"], p["heads"])
        if p["state"] % 2:
            raise ModelError(f"model 'omni_mixture': state {p['state']} must be even; change model.params.state")
        if p["pool"] > p["seq_len"]:
            raise ModelError(
                f"model 'omni_mixture': pool {p['pool']} is longer than seq_len {p['seq_len']}, so no "
                "coarse token fits in the window; lower model.params.pool or raise seq_len"
            )
        widest = 2 ** (min(p["layers"], p["dilation_cycle"]) - 1)
        if (p["kernel_size"] - 1) * widest >= p["seq_len"]:
            raise ModelError(
                f"model 'omni_mixture': a convolution with dilation {widest} and kernel_size "
                f"{p['kernel_size']} reaches {(p['kernel_size'] - 1) * widest} steps back, past seq_len "
                f"{p['seq_len']}; lower model.params.dilation_cycle or kernel_size, or raise seq_len"
            )
