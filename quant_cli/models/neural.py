"""A torch multilayer perceptron for tabular rows, with an optional learned symbol embedding.

The torch modules and the training loop are in `nets.py` (imported on first use, so the model
registry loads without torch). Training: AdamW on shuffled mini-batches; after each epoch the
validation loss decides early stopping (patience in epochs) and the best epoch's weights are kept.
Regression labels are standardised inside the model: returns are ~1e-2, and unscaled the first
epochs would be spent only shrinking the output. Weights are saved with `torch.save` of a state
dict of tensors and loaded with `weights_only=True`, so loading never runs pickled code.

Reproducibility: a fit seeds torch inside `fork_rng` (the caller's random state is untouched) and,
on CPU, runs with deterministic algorithms.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.params import Limit, above, at_least, between


class MLPModel(Model):
    name = "mlp"
    family = "neural"
    tasks = TASKS
    sample_weights = True
    gpu = True
    early_stopping = True
    symbol_encodings = ("none", "one_hot", "embedding")
    defaults = {"hidden": [64, 32], "dropout": 0.1, "learning_rate": 1e-3, "weight_decay": 1e-4,
                "epochs": 50, "batch_size": 256, "embedding_dim": 4}
    limits = {"hidden": Limit(note="layer widths, e.g. [64, 32]"), "dropout": between(0, 1, high_open=True),
              "learning_rate": above(0), "weight_decay": at_least(0), "epochs": at_least(1), "batch_size": at_least(1),
              "embedding_dim": at_least(1)}

    def _check_params(self) -> None:
        hidden = self.params["hidden"]
        if (not isinstance(hidden, (list, tuple))
                or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
            raise ModelError(f"model.params.hidden: expected a list of positive layer widths, e.g. [64, 32], "
                             f"for model '{self.name}', got {hidden!r}")

    def _usable_device(self, resolved: str) -> str:
        return resolved  # torch runs on cpu, cuda:N and mps alike

    def _config(self, n_inputs: int):
        from quant_cli.models.nets import MLPConfig

        n_symbols = len(self.encoder_.symbols_) if self.encoder_.kind == "embedding" else 0
        return MLPConfig(n_inputs=n_inputs, n_outputs=self.n_classes if self.is_classifier else 1,
                         hidden=tuple(self.params["hidden"]), dropout=self.params["dropout"],
                         n_symbols=n_symbols, embedding_dim=self.params["embedding_dim"])

    def _batch(self, rows: Inputs, y: np.ndarray | None = None, w: np.ndarray | None = None):
        import torch

        from quant_cli.models.nets import Batch

        def tensor(a, dtype):
            return None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device_)

        if y is not None and not self.is_classifier:
            y = (y - self.y_mean_) / self.y_std_
        y_dtype = torch.int64 if self.is_classifier else torch.float32
        return Batch(tensor(rows.X, torch.float32), tensor(rows.ids, torch.int64), tensor(y, y_dtype), tensor(w, torch.float32))

    def _loss(self, net, b):
        import torch.nn.functional as F

        out = net(b.x, b.ids)  # (B, n_outputs)
        if self.is_classifier:
            per_row = F.cross_entropy(out, b.y, reduction="none")  # (B,)
        else:
            per_row = (out[:, 0] - b.y) ** 2  # (B,)
        return per_row.mean() if b.w is None else (per_row * b.w).sum() / b.w.sum()

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from quant_cli.models import nets

        if not self.is_classifier:
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        self.config_ = self._config(train.X.shape[1])
        p = self.params
        cfg = nets.TrainConfig(p["epochs"], p["batch_size"], p["learning_rate"], p["weight_decay"], early_stopping)
        with nets.reproducible(self.seed, self.device_, self.threads):
            net = nets.MLP(self.config_).to(self.device_)
            held = self._batch(val, y_val) if val is not None and early_stopping else None
            result = nets.train(net, self._batch(train, y, sample_weight), held, self._loss, cfg)
        self.net_, self.epochs_run_, self.best_epoch_ = net, result.epochs_run, result.best_epoch

    def _predict(self, rows: Inputs) -> np.ndarray:
        import torch

        from quant_cli.models.nets import infer

        # (n, n_outputs); to CPU before float64, which MPS lacks
        out = infer(self.net_, self._batch(rows), self.config_.n_outputs).cpu().double()
        if self.is_classifier:
            return torch.softmax(out, dim=1).numpy()
        return out[:, 0].numpy() * self.y_std_ + self.y_mean_

    def _fit_info(self) -> dict[str, Any]:
        info = {"epochs_run": self.epochs_run_, "best_epoch": self.best_epoch_, "config": asdict(self.config_)}
        if not self.is_classifier:
            info.update(y_mean=self.y_mean_, y_std=self.y_std_)
        return info

    def _save_native(self, folder: Path) -> None:
        import torch

        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()}, folder / "weights.pt")

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        from quant_cli.models.nets import MLP, MLPConfig

        info = meta["fit_info"]
        self.config_ = MLPConfig(**{**info["config"], "hidden": tuple(info["config"]["hidden"])})
        self.epochs_run_, self.best_epoch_ = info["epochs_run"], info["best_epoch"]
        if not self.is_classifier:
            self.y_mean_, self.y_std_ = info["y_mean"], info["y_std"]
        self.net_ = MLP(self.config_)
        self.net_.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        self.net_.eval()
