"""itransformer: the inverted transformer, whose tokens are the variates, not the time steps (Liu et al. 2024).

Each feature channel (variate) of the window is normalised by its own window mean and standard
deviation (RevIN without the affine, the paper's normalisation; nothing after t enters), and its
whole window of `seq_len` steps is embedded by one linear map into a `d_model` token. The C tokens
run through `layers` encoder layers (post-norm, as in the paper): self-attention across the
variates (which features move together in this window) and a feed-forward MLP applied to each
token (each variate's own series representation). No positional encoding: the variates have no
order. A linear projection maps each token to its variate's next value, RevIN maps it back to the
variate's units, and the head reads these per-variate values (and the symbol encoding).

Kept from the paper: inverted embedding of each variate's whole window, attention across variates,
per-token feed-forward, LayerNorm over each token, per-variate projection, the normalisation.
Not kept: the multi-step horizon (one score per row) and timestamp covariates as extra tokens.
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
from quant_cli.models.torch.revin import RevIN


@dataclass
class ITransformerConfig(SequenceConfig):
    d_model: int = param(32, "width of each variate's token (heads x head width)", at_least(2))
    heads: int = param(4, "attention heads; d_model must split into them", at_least(1))
    layers: int = param(2, "encoder layers", between(1, 32))
    ff_mult: int = param(2, "feed-forward width as a multiple of d_model", at_least(1))
    revin: bool = param(True, "normalise each variate by its window's mean and std, reversed at the output")


class Layer(nn.Module):
    def __init__(self, cfg: ITransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv, self.proj = nn.Linear(cfg.d_model, 3 * cfg.d_model), nn.Linear(cfg.d_model, cfg.d_model)
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d = x.shape
        q, k, v = (t.view(b, c, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v)  # every variate attends to every variate: (B, h, C, d)
        return self.proj(y.transpose(1, 2).reshape(b, c, d))  # (B, C, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.drop(self.attend(x)))  # post-norm, as in the paper
        return self.ln2(x + self.drop(self.mlp(x)))  # (B, C, D)


class ITransformer(nn.Module):
    def __init__(self, cfg: ITransformerConfig) -> None:
        super().__init__()
        self.revin = RevIN(cfg.n_inputs, center="mean", affine=False) if cfg.revin else None
        self.embed = nn.Linear(cfg.seq_len, cfg.d_model)  # a variate's whole window → its token
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.Sequential(*(Layer(cfg) for _ in range(cfg.layers)))
        self.project = nn.Linear(cfg.d_model, 1)  # a variate's token → its next value
        self.head = Head(cfg.n_inputs, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, C), oldest step first
        if self.revin is not None:
            x, stats = self.revin(x)  # (B, L, C), per-variate window statistics
        tokens = self.drop(self.embed(x.transpose(1, 2)))  # (B, C, D): one token per variate
        z = self.project(self.layers(tokens)).squeeze(2)  # (B, C): one value per variate
        if self.revin is not None:
            z = self.revin.reverse(z, stats)  # back in each variate's units
        return self.head(z, ids)  # (B, n_outputs)


class ITransformerModel(SequenceModel):
    name = "itransformer"
    config = ITransformerConfig
    network = ITransformer
    fast_test = {"seq_len": 4, "d_model": 8, "heads": 2, "layers": 1}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        if p["d_model"] % p["heads"]:
            raise ModelError(
                f"model 'itransformer': d_model {p['d_model']} must split into {p['heads']} heads; "
                "change model.params.d_model or heads"
            )
