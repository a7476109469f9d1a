"""patchtst: a channel-independent transformer over patches of each feature's window (Nie et al. 2023),
a path model: it forecasts the label's h one-bar returns.

Each feature channel of the window is normalised by RevIN (subtract-last by default: the window's
last value, i.e. the row scored, and its standard deviation, so nothing after t enters), padded at
its end with `stride` copies of its last value and cut into overlapping patches of `patch_len` steps
every `stride` steps. Every channel is a separate sequence of patch tokens through one shared
encoder (channel independence: the weights are shared, the channels never attend to each other):
a linear patch embedding plus learned positions, then `layers` pre-norm encoder layers of
full self-attention over the patches (all of them at or before t) and a feed-forward MLP. A flatten
head maps a channel's patch tokens to its next h values in normalised units (the paper's forecast of
each channel over the horizon), RevIN maps them back to the channel's units, and the head reads these
per-channel paths (and the symbol encoding) into the path of the label's h one-bar returns
(n_outputs = the label's horizon). The model's score is that path compounded, as the label compounds it.

Kept from the paper: patching with stride and end padding, channel independence, RevIN with
subtract-last, the transformer encoder, the flatten head to a multi-step horizon. Not kept:
self-supervised masked pretraining, and BatchNorm in the encoder (LayerNorm, so a score never depends
on its batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between, choice
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head
from quant_cli.models.torch.revin import RevIN


@dataclass
class PatchTSTConfig(SequenceConfig):
    patch_len: int = param(8, "steps per patch (paper: 16 of 336)", between(1, 4096))
    stride: int = param(4, "steps between the starts of consecutive patches (paper: 8)", between(1, 4096))
    d_model: int = param(32, "width of every patch token (heads x head width)", at_least(2))
    heads: int = param(4, "attention heads; d_model must split into them", at_least(1))
    layers: int = param(2, "encoder layers", between(1, 32))
    ff_mult: int = param(2, "feed-forward width as a multiple of d_model", at_least(1))
    revin: str = param(
        "last",
        "RevIN centre: the window's last value, its mean, or off (no normalisation)",
        choice("last", "mean", "off"),
    )


def n_patches(seq_len: int, patch_len: int, stride: int) -> int:
    """Patches of a window padded at its end by `stride` steps; the last one always covers step t."""
    return (seq_len + stride - patch_len) // stride + 1


class Layer(nn.Module):
    def __init__(self, cfg: PatchTSTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv, self.proj = nn.Linear(cfg.d_model, 3 * cfg.d_model), nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v)  # every patch sees every patch of its window: (B·C, h, N, d)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))  # (B·C, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attend(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))  # (B·C, N, D)


class PatchTST(nn.Module):
    def __init__(self, cfg: PatchTSTConfig) -> None:
        super().__init__()
        self.patch_len, self.stride = cfg.patch_len, cfg.stride
        patches = n_patches(cfg.seq_len, cfg.patch_len, cfg.stride)
        self.revin = RevIN(cfg.n_inputs, center=cfg.revin) if cfg.revin != "off" else None
        self.embed = nn.Linear(cfg.patch_len, cfg.d_model)
        self.position = nn.Parameter(torch.zeros(patches, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.Sequential(*(Layer(cfg) for _ in range(cfg.layers)))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.flatten = nn.Linear(patches * cfg.d_model, cfg.n_outputs)  # a channel's tokens → its next h values
        self.head = Head(cfg.n_inputs * cfg.n_outputs, cfg)  # every channel's path → the return path

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, C), oldest step first
        b, _, c = x.shape
        if self.revin is not None:
            x, stats = self.revin(x)  # (B, L, C), per-channel window statistics
        series = x.transpose(1, 2)  # (B, C, L)
        series = torch.cat([series, series[:, :, -1:].expand(b, c, self.stride)], dim=2)  # (B, C, L + S)
        patches = series.unfold(2, self.patch_len, self.stride)  # (B, C, N, P)
        tokens = self.embed(patches.reshape(b * c, -1, self.patch_len)) + self.position  # (B·C, N, D)
        h = self.norm(self.layers(self.drop(tokens)))  # (B·C, N, D)
        z = self.flatten(h.reshape(b, c, -1))  # (B, C, H): h values per channel
        if self.revin is not None:  # back in each channel's units, step by step: (H, B, C) → (B, C, H)
            z = self.revin.reverse(z.permute(2, 0, 1), stats).permute(1, 2, 0)
        return self.head(z.flatten(1), ids)  # (B, C·H) → (B, H): the path of one-bar returns (scaled)


class PatchTSTModel(SequenceModel):
    name = "patchtst"
    config = PatchTSTConfig
    network = PatchTST
    output = "path"
    tasks = ("regression",)
    fast_test = {"seq_len": 4, "patch_len": 2, "stride": 2, "d_model": 8, "heads": 2, "layers": 1}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        if p["patch_len"] > p["seq_len"]:
            raise ModelError(
                f"model 'patchtst': patch_len {p['patch_len']} is longer than seq_len {p['seq_len']}; "
                "lower model.params.patch_len or raise seq_len"
            )
        if p["d_model"] % p["heads"]:
            raise ModelError(
                f"model 'patchtst': d_model {p['d_model']} must split into {p['heads']} heads; "
                "change model.params.d_model or heads"
            )
