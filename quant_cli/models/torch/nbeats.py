"""nbeats: N-BEATS (Oreshkin et al. 2019), the first path model: it forecasts the label's h one-bar returns.

Blocks of fully connected layers, doubly residual: each block reads the residual of the window, emits a
backcast (its reconstruction of that input, subtracted before the next block) and a forecast (added to
the sum of forecasts). `stacks = "generic"`: two stacks of blocks whose backcast/forecast are free
linear maps of the block's expansion coefficients θ. `stacks = "interpretable"`: a trend stack (θ are the
coefficients of a polynomial of degree `degree` in time) then a seasonality stack (θ are the
coefficients of a Fourier series with `harmonics` harmonics).

Multivariate windows: N-BEATS is univariate; here the block input is the whole window flattened
(seq_len × n_inputs, the preprocessed features and any raw-bar channels) and the backcast reconstructs
all of it — in the interpretable stacks each channel gets its own trend/seasonality coefficients on a
shared time basis. The forecast is univariate: the path of one-bar returns (n_outputs = the label's
horizon). The symbol encoding (quant_cli.models.torch.heads.SymbolInput) joins every block's input
as a static covariate. The model's score is the forecast path compounded, as the label compounds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from quant_cli.models.params import at_least, between, choice
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import SymbolInput


@dataclass
class NBeatsConfig(SequenceConfig):
    stacks: str = param(
        "generic",
        "generic (two stacks of free linear bases) or interpretable (trend then seasonality)",
        choice("generic", "interpretable"),
    )
    blocks: int = param(3, "blocks per stack", between(1, 30))
    hidden: int = param(64, "width of every block's fully connected layers", at_least(1))
    layers: int = param(4, "fully connected layers per block", between(1, 8))
    theta: int = param(16, "expansion coefficients of a generic block's backcast and forecast", at_least(1))
    degree: int = param(2, "degree of the trend polynomial (interpretable stacks)", between(0, 5))
    harmonics: int = param(3, "Fourier harmonics of the seasonality basis (interpretable stacks)", between(1, 32))


def trend_basis(steps: int, degree: int) -> torch.Tensor:
    """(degree + 1, steps): t**p on t = 0, 1/steps, ... (the paper's polynomial basis)."""
    t = torch.arange(steps, dtype=torch.float32) / steps
    return torch.stack([t**p for p in range(degree + 1)])


def seasonality_basis(steps: int, harmonics: int) -> torch.Tensor:
    """(2·harmonics + 1, steps): 1, cos(2πkt), sin(2πkt) for k = 1 .. harmonics."""
    t = torch.arange(steps, dtype=torch.float32) / steps
    waves = [torch.ones(steps)]
    for k in range(1, harmonics + 1):
        waves += [torch.cos(2 * math.pi * k * t), torch.sin(2 * math.pi * k * t)]
    return torch.stack(waves)


class Block(nn.Module):
    """Residual window (B, L·F) + symbol code → (backcast (B, L·F), forecast (B, H)).

    `back`/`fore`: None for a generic block (a learned linear basis of `theta` coefficients), else the
    fixed basis (K, L) / (K, H) the coefficients multiply (trend or seasonality)."""

    def __init__(self, cfg: NBeatsConfig, code_width: int, back: torch.Tensor | None, fore: torch.Tensor | None):
        super().__init__()
        steps, features, horizon = cfg.seq_len, cfg.n_inputs, cfg.n_outputs
        widths = [steps * features + code_width] + [cfg.hidden] * cfg.layers
        layers = ((nn.Linear(widths[i], widths[i + 1]), nn.ReLU()) for i in range(cfg.layers))
        self.fc = nn.Sequential(*(m for pair in layers for m in pair))
        self.drop = nn.Dropout(cfg.dropout)
        self.steps, self.features = steps, features
        if back is None:  # generic: θ then a free linear map to the window and to the path
            self.theta_b, self.theta_f = nn.Linear(cfg.hidden, cfg.theta), nn.Linear(cfg.hidden, cfg.theta)
            self.back, self.fore = nn.Linear(cfg.theta, steps * features), nn.Linear(cfg.theta, horizon)
        else:  # interpretable: θ are the coefficients of a fixed basis, one set per channel for the backcast
            self.theta_b = nn.Linear(cfg.hidden, features * back.shape[0], bias=False)
            self.theta_f = nn.Linear(cfg.hidden, fore.shape[0], bias=False)
            self.register_buffer("back_basis", back, persistent=False)
            self.register_buffer("fore_basis", fore, persistent=False)
            self.back = self.fore = None

    def forward(self, x: torch.Tensor, code: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(self.fc(x if code is None else torch.cat([x, code], dim=1)))  # (B, hidden)
        if self.back is not None:
            return self.back(self.theta_b(h)), self.fore(self.theta_f(h))
        theta = self.theta_b(h).view(len(h), self.features, -1)  # (B, F, K)
        backcast = (theta @ self.back_basis).transpose(1, 2).reshape(len(h), -1)  # (B, F, L) → (B, L·F)
        return backcast, self.theta_f(h) @ self.fore_basis  # (B, L·F), (B, H)


class NBeats(nn.Module):
    def __init__(self, cfg: NBeatsConfig) -> None:
        super().__init__()
        self.symbols = SymbolInput(cfg)
        L, H, width = cfg.seq_len, cfg.n_outputs, self.symbols.width
        if cfg.stacks == "generic":
            bases = [(None, None)] * (2 * cfg.blocks)
        else:
            trend = (trend_basis(L, cfg.degree), trend_basis(H, cfg.degree))
            season = (seasonality_basis(L, cfg.harmonics), seasonality_basis(H, cfg.harmonics))
            bases = [trend] * cfg.blocks + [season] * cfg.blocks
        self.blocks = nn.ModuleList(Block(cfg, width, back, fore) for back, fore in bases)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F)
        residual = x.flatten(1)  # (B, L·F), oldest step first
        code = None if self.symbols.kind == "none" else self.symbols(residual[:, :0], ids)  # (B, code width)
        forecast = 0.0
        for block in self.blocks:  # doubly residual: subtract what the block explained, add what it forecasts
            backcast, step = block(residual, code)
            residual, forecast = residual - backcast, forecast + step
        return forecast  # (B, H): the path of one-bar returns (scaled)


class NBeatsModel(SequenceModel):
    name = "nbeats"
    config = NBeatsConfig
    network = NBeats
    output = "path"
    tasks = ("regression",)
    fast_test = {"seq_len": 4, "hidden": 16, "layers": 2, "blocks": 1, "theta": 8}
