"""mlp: a multilayer perceptron over tabular rows (one row in, no window), with an optional learned
symbol embedding.

It trains on the one loop every torch model shares (quant_cli.models.torchmodel): the loop's
settings (epochs, batch_size, learning_rate, ...) come from [train], the architecture from
model.params (the fields of `MLPConfig`). Reproducibility: a fit seeds torch inside `fork_rng`
(the caller's random state is untouched) and, on CPU, runs with deterministic algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.base import Inputs
from quant_cli.models.params import Limit
from quant_cli.models.torch.config import NetConfig, param
from quant_cli.models.torch.heads import SymbolInput
from quant_cli.models.torch.windows import Samples, previous_rows, timestamp_codes
from quant_cli.models.torchmodel import TorchModel


@dataclass
class MLPConfig(NetConfig):
    hidden: list[int] = param(
        [64, 32], "widths of the hidden layers, input side first", Limit(note="layer widths, e.g. [64, 32]")
    )


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.symbols = SymbolInput(cfg)  # the symbol joins the inputs (one_hot arrives as columns)
        width, layers = cfg.n_inputs + self.symbols.width, []
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, cfg.n_outputs)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, F) float32; ids: (B,) int64
        return self.head(self.body(self.symbols(x, ids)))  # (B, n_outputs)


class MLPModel(TorchModel):
    name = "mlp"
    config = MLPConfig
    network = MLP
    fast_test = {"hidden": [16]}
    symbol_encodings = ("none", "one_hot", "embedding")

    def _check_architecture(self) -> None:
        hidden = self.params["hidden"]
        if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
        ):
            raise ModelError(
                f"model.params.hidden: expected a list of positive layer widths, e.g. [64, 32], "
                f"for model '{self.name}', got {hidden!r}"
            )

    def _symbol_input(self) -> tuple[str, int]:
        embedding = self.encoder_.kind == "embedding"  # one_hot arrives as columns of X
        return ("embedding", len(self.encoder_.symbols_)) if embedding else ("none", 0)

    def _samples(self, rows: Inputs, y=None, w=None):
        from quant_cli.models.torch.loop import to_device

        dev = self.device_

        def tensor(a, dtype):
            return None if a is None else to_device(np.asarray(a), dev, dtype)

        y_dtype = torch.int64 if self.is_classifier else torch.float32
        n = len(rows.X)
        prev = previous_rows(rows.symbols, rows.ts)  # the pnl loss's and the PnL telemetry's turnover
        samples = Samples(
            tensor(rows.X, torch.float32),
            torch.arange(n, device=dev),
            0,
            tensor(rows.ids, torch.int64),
            tensor(y, y_dtype),
            tensor(w, torch.float32),
            tensor(timestamp_codes(rows.ts), torch.int64),
            tensor(prev, torch.int64),
        )
        return samples, np.ones(n, dtype=bool)
