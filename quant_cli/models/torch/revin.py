"""RevIN: reversible instance normalisation (Kim et al. 2022), shared by patchtst, tsmixer and itransformer.

Each window is normalised per channel by its own statistics (its mean, or its last value under
`subtract-last`, and its standard deviation), so nothing outside the window (and nothing after t)
enters; an optional learned affine follows. The network then forecasts one value per channel in
normalised units, and `reverse` maps it back to the channel's own units with the same statistics.
These per-channel values are what the head reads: the level the normalisation took away comes back.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-5


class RevIN(nn.Module):
    def __init__(self, channels: int, center: str = "mean", affine: bool = True) -> None:
        super().__init__()
        self.center = center  # "mean" or "last"
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, L, C) → normalised x (B, L, C) and the statistics (B, C) twice, for `reverse`."""
        center = x[:, -1] if self.center == "last" else x.mean(dim=1)  # (B, C)
        scale = torch.sqrt(x.var(dim=1, unbiased=False) + EPS)  # (B, C)
        z = (x - center[:, None]) / scale[:, None]
        if self.weight is not None:
            z = z * self.weight + self.bias
        return z, (center, scale)

    def reverse(self, z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One normalised value per channel (B, C) → the same in each channel's units (B, C)."""
        center, scale = stats
        if self.weight is not None:
            z = (z - self.bias) / (self.weight + EPS * EPS)
        return z * scale + center
