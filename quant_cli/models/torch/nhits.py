"""nhits: N-HiTS (Challu et al. 2023), a path model: it forecasts the label's h one-bar returns.

N-BEATS's doubly residual stacks of MLP blocks, made multi-rate. Stack i first max-pools the residual
window over time with its own kernel (`pool_kernels[i]`: a long kernel makes a stack see only the
window's coarse shape), then its blocks' MLPs emit a full-resolution backcast (subtracted before the
next block) and only ceil(h / `downsample[i]`) forecast coefficients, which are interpolated to the h
steps of the path (hierarchical interpolation: the coarse stacks can only forecast smooth paths, the
last, finest stack adds the detail). The forecast is the sum of every block's interpolated forecast.

Multivariate windows, as in nbeats: the block input is the pooled window of every channel flattened
(the preprocessed features and any raw-bar channels), the backcast reconstructs every channel at full
resolution, and the forecast is univariate: the path of one-bar returns (n_outputs = the label's
horizon). The symbol encoding (quant_cli.models.torch.heads.SymbolInput) joins every block's input as a
static covariate. The model's score is the forecast path compounded, as the label compounds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between, choice
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import SymbolInput


@dataclass
class NHiTSConfig(SequenceConfig):
    pool_kernels: list = param([4, 2, 1], "max-pooling kernel over time of each stack's input (one per stack)")
    downsample: list = param(
        [4, 2, 1], "each stack forecasts ceil(horizon / downsample) points, interpolated to the horizon"
    )
    blocks: int = param(1, "blocks per stack", between(1, 30))
    hidden: int = param(64, "width of every block's fully connected layers", at_least(1))
    layers: int = param(2, "fully connected layers per block", between(1, 8))
    interpolation: str = param("linear", "how the forecast points become the path", choice("linear", "nearest"))


def pooled_steps(seq_len: int, kernel: int) -> int:
    """Steps left after max-pooling a window of seq_len with kernel = stride (a last partial pool kept)."""
    return math.ceil(seq_len / kernel)


def interpolation_basis(points: int, horizon: int, mode: str) -> torch.Tensor:
    """(points, horizon): row j is the interpolation of a unit coefficient at point j over the horizon, so
    coefficients (B, points) @ basis is their interpolation (interpolating is linear in the coefficients)."""
    eye = torch.eye(points).unsqueeze(1)  # (points, 1, points): each coefficient alone
    extra = {"align_corners": False} if mode == "linear" else {}
    return F.interpolate(eye, size=horizon, mode=mode, **extra).squeeze(1)  # (points, horizon)


class Block(nn.Module):
    """Residual window (B, L, F) + symbol code → (backcast (B, L·F), forecast (B, H)), after pooling."""

    def __init__(self, cfg: NHiTSConfig, code_width: int, kernel: int, ratio: int) -> None:
        super().__init__()
        steps, features, horizon = cfg.seq_len, cfg.n_inputs, cfg.n_outputs
        self.pool = nn.MaxPool1d(kernel, stride=kernel, ceil_mode=True)
        widths = [pooled_steps(steps, kernel) * features + code_width] + [cfg.hidden] * cfg.layers
        layers = ((nn.Linear(widths[i], widths[i + 1]), nn.ReLU()) for i in range(cfg.layers))
        self.fc = nn.Sequential(*(m for pair in layers for m in pair))
        self.drop = nn.Dropout(cfg.dropout)
        points = math.ceil(horizon / ratio)
        self.backcast = nn.Linear(cfg.hidden, steps * features)  # θ^b: the window at full resolution
        self.forecast = nn.Linear(cfg.hidden, points)  # θ^f: the path at 1 / ratio of its resolution
        self.register_buffer("basis", interpolation_basis(points, horizon, cfg.interpolation), persistent=False)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(x.transpose(1, 2)).flatten(1)  # (B, F, L) → (B, F, ceil(L / kernel)) → (B, F·L')
        h = self.drop(self.fc(pooled if code is None else torch.cat([pooled, code], dim=1)))  # (B, hidden)
        return self.backcast(h), self.forecast(h) @ self.basis  # (B, L·F), (B, points) @ (points, H) → (B, H)


class NHiTS(nn.Module):
    def __init__(self, cfg: NHiTSConfig) -> None:
        super().__init__()
        self.symbols = SymbolInput(cfg)
        self.steps, self.features = cfg.seq_len, cfg.n_inputs
        stacks = zip(cfg.pool_kernels, cfg.downsample)
        self.blocks = nn.ModuleList(
            Block(cfg, self.symbols.width, kernel, ratio) for kernel, ratio in stacks for _ in range(cfg.blocks)
        )

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), oldest step first
        residual = x.flatten(1)  # (B, L·F)
        code = None if self.symbols.kind == "none" else self.symbols(residual[:, :0], ids)  # (B, code width)
        forecast = 0.0
        for block in self.blocks:  # doubly residual: subtract what the block explained, add what it forecasts
            backcast, step = block(residual.view(len(x), self.steps, self.features), code)
            residual, forecast = residual - backcast, forecast + step
        return forecast  # (B, H): the path of one-bar returns (scaled)


class NHiTSModel(SequenceModel):
    name = "nhits"
    config = NHiTSConfig
    network = NHiTS
    output = "path"
    tasks = ("regression",)
    fast_test = {"seq_len": 4, "hidden": 16, "pool_kernels": [2, 1], "downsample": [2, 1]}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        for key in ("pool_kernels", "downsample"):
            value = p[key]
            if not isinstance(value, list) or not value or not all(_positive_int(v) for v in value):
                raise ModelError(
                    f"model.params.{key}: expected a non-empty list of integers >= 1 (one per stack) "
                    f"for model 'nhits', got {value!r}"
                )
        if len(p["pool_kernels"]) != len(p["downsample"]):
            raise ModelError(
                f"model 'nhits': pool_kernels {p['pool_kernels']} and downsample {p['downsample']} must have one "
                "entry per stack each; give model.params.pool_kernels and downsample the same length"
            )
        if max(p["pool_kernels"]) > p["seq_len"]:
            raise ModelError(
                f"model 'nhits': a pooling kernel of {max(p['pool_kernels'])} is longer than seq_len {p['seq_len']}; "
                "lower model.params.pool_kernels or raise seq_len"
            )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
