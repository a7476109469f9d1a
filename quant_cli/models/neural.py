"""mlp: a torch multilayer perceptron over tabular rows, with an optional learned symbol embedding.

It trains on the one loop every torch model shares (quant_cli.models.torchmodel): the loop's
settings (epochs, batch_size, learning_rate, ...) come from [train], the architecture from
model.params. Reproducibility: a fit seeds torch inside `fork_rng` (the caller's random state is
untouched) and, on CPU, runs with deterministic algorithms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.models.base import Inputs
from quant_cli.models.params import Limit, at_least, between
from quant_cli.models.torchmodel import TorchModel


def timestamp_codes(ts: np.ndarray | None) -> np.ndarray | None:
    """int64 codes of timestamps (the sharpe loss and the validation IC group rows by them)."""
    return None if ts is None else np.asarray(ts).astype("datetime64[us]").astype(np.int64)


def previous_rows(symbols: np.ndarray | None, ts: np.ndarray | None) -> np.ndarray:
    """(n,) index of the row holding the same symbol's previous timestamp among these rows, -1 for
    a symbol's first (the pnl loss's turnover; rows without symbols are one symbol; without
    timestamps, the rows' own order is time order)."""
    n = 0 if symbols is None and ts is None else len(symbols if symbols is not None else ts)
    keys = [np.arange(n)] if ts is None else [np.asarray(ts).astype("datetime64[us]").astype(np.int64)]
    if symbols is not None:
        keys.append(np.unique(np.asarray(symbols).astype(str), return_inverse=True)[1])
    order = np.lexsort(keys)  # by symbol, then time
    prev = np.full(n, -1, dtype=np.int64)
    same = np.ones(max(n - 1, 0), dtype=bool) if symbols is None else keys[-1][order[1:]] == keys[-1][order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev


class MLPModel(TorchModel):
    name = "mlp"
    symbol_encodings = ("none", "one_hot", "embedding")
    defaults = {"hidden": [64, 32], "dropout": 0.1, "embedding_dim": 4}
    limits = {"hidden": Limit(note="layer widths, e.g. [64, 32]"), "dropout": between(0, 1, high_open=True),
              "embedding_dim": at_least(1)}

    def _check_architecture(self) -> None:
        hidden = self.params["hidden"]
        if (not isinstance(hidden, (list, tuple))
                or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
            raise ModelError(f"model.params.hidden: expected a list of positive layer widths, e.g. [64, 32], "
                             f"for model '{self.name}', got {hidden!r}")

    def _net_config(self, n_inputs: int):
        from quant_cli.models.torch.mlp import MLPConfig

        embedding = self.encoder_.kind == "embedding"  # one_hot arrives as columns of X
        return MLPConfig(n_inputs=n_inputs, n_outputs=self.n_classes if self.is_classifier else 1,
                         dropout=self.params["dropout"], symbol_kind="embedding" if embedding else "none",
                         n_symbols=len(self.encoder_.symbols_) if embedding else 0,
                         embedding_dim=self.params["embedding_dim"], hidden=tuple(self.params["hidden"]))

    def _build(self, config):
        from quant_cli.models.torch.mlp import MLP

        return MLP(config)

    def _config_from_json(self, data: dict[str, Any]):
        from quant_cli.models.torch.mlp import MLPConfig

        return MLPConfig(**{**data, "hidden": tuple(data["hidden"])})

    def _samples(self, rows: Inputs, y=None, w=None):
        import torch

        from quant_cli.models.torch.loop import to_device
        from quant_cli.models.torch.windows import Samples

        dev = self.device_

        def tensor(a, dtype):
            return None if a is None else to_device(np.asarray(a), dev, dtype)

        y_dtype = torch.int64 if self.is_classifier else torch.float32
        n = len(rows.X)
        prev = previous_rows(rows.symbols, rows.ts) if self.loop.loss == "pnl" else None
        samples = Samples(tensor(rows.X, torch.float32), torch.arange(n, device=dev), 0, tensor(rows.ids, torch.int64),
                          tensor(y, y_dtype), tensor(w, torch.float32), tensor(timestamp_codes(rows.ts), torch.int64),
                          tensor(prev, torch.int64))
        return samples, np.ones(n, dtype=bool)
