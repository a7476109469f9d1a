"""tsmixer: an all-MLP mixer over the window's time steps and features (Chen et al. 2023).

The window (L steps x C features) is normalised per feature by RevIN (its own mean and standard
deviation, so nothing after t enters), then runs through `blocks` mixer layers. Each layer mixes
time (one linear map over the L steps, shared by every feature, + ReLU) and then features (a
two-layer MLP over the C features, shared by every step), each as a residual branch after a
LayerNorm over the whole (L, C) window and with dropout. A temporal projection maps each feature's L
steps to one value: the feature's next value in normalised units, which RevIN maps back to the
feature's units; the head reads these C values (and the symbol encoding).

Kept from the paper: time-mixing and feature-mixing MLPs with residuals and normalisation, RevIN,
the temporal projection. Not kept: the multi-step horizon (one score per row here) and the
auxiliary-covariate variant (TSMixer-Ext). The paper's BatchNorm/LayerNorm option is LayerNorm only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head
from quant_cli.models.torch.revin import RevIN


@dataclass
class TSMixerConfig(SequenceConfig):
    blocks: int = param(2, "mixer layers (each mixes time, then features)", between(1, 32))
    ff_dim: int = param(64, "hidden width of the feature-mixing MLP", at_least(1))
    revin: bool = param(True, "normalise each feature by its window's mean and std (RevIN), reversed at the output")


class MixerLayer(nn.Module):
    def __init__(self, cfg: TSMixerConfig) -> None:
        super().__init__()
        steps, features = cfg.seq_len, cfg.n_inputs
        self.time_norm, self.feature_norm = nn.LayerNorm([steps, features]), nn.LayerNorm([steps, features])
        self.time_mlp = nn.Sequential(nn.Linear(steps, steps), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.feature_mlp = nn.Sequential(
            nn.Linear(features, cfg.ff_dim),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_dim, features),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, C)
        x = x + self.time_mlp(self.time_norm(x).transpose(1, 2)).transpose(1, 2)  # mix steps: (B, L, C)
        return x + self.feature_mlp(self.feature_norm(x))  # mix features: (B, L, C)


class TSMixer(nn.Module):
    def __init__(self, cfg: TSMixerConfig) -> None:
        super().__init__()
        self.revin = RevIN(cfg.n_inputs) if cfg.revin else None
        self.layers = nn.Sequential(*(MixerLayer(cfg) for _ in range(cfg.blocks)))
        self.project = nn.Linear(cfg.seq_len, 1)  # temporal projection: L steps → the next one
        self.head = Head(cfg.n_inputs, cfg)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, C), oldest step first
        if self.revin is not None:
            x, stats = self.revin(x)  # (B, L, C), per-feature window statistics
        h = self.layers(x)  # (B, L, C)
        z = self.project(h.transpose(1, 2)).squeeze(2)  # (B, C): one value per feature
        if self.revin is not None:
            z = self.revin.reverse(z, stats)  # back in each feature's units
        return self.head(z, ids)  # (B, n_outputs)


class TSMixerModel(SequenceModel):
    name = "tsmixer"
    config = TSMixerConfig
    network = TSMixer
    fast_test = {"seq_len": 4, "blocks": 1, "ff_dim": 8}
