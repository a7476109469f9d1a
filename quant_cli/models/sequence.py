"""Sequence models: lstm, gru, tcn and transformer over windows of a symbol's rows.

The input of prediction row (symbol, t) is that symbol's last `seq_len` rows ending at t
(inclusive), read from a `Panel` of every row (quant_cli.models.panel) — purged and embargoed
rows still supply past inputs, never labels. Rows without a full window (the first seq_len - 1
rows of each symbol) are not trained on and not scored: `predict` gives NaN for them and the
train stage leaves them out of predictions.parquet, so everything downstream joins by
(symbol, ts). `fit`/`predict` also take a plain (n, F) matrix with `symbols` (and `ts`): each
symbol's rows are then its whole history.

Every family supports regression and classification and the symbol encodings none, one_hot,
index and embedding (quant_cli.models.torch.heads), with the same unseen-symbol policy as the
tabular models.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.models.base import Inputs
from quant_cli.models.encoding import KINDS
from quant_cli.models.neural import timestamp_codes
from quant_cli.models.panel import PanelRows, as_panel_rows
from quant_cli.models.params import at_least, between, choice
from quant_cli.models.torch.config import receptive_field
from quant_cli.models.torchmodel import TorchModel

_CHECK_ROWS = 65_536  # panel rows checked at once: the check's temporary stays small
_COMMON = {"seq_len": 32, "dropout": 0.1, "embedding_dim": 4, "inputs": "features"}
_COMMON_LIMITS = {"seq_len": between(1, 4096), "dropout": between(0, 1, high_open=True), "embedding_dim": at_least(1),
                  "inputs": choice("features", "bars", "both")}


class SequenceModel(TorchModel):
    tabular = False
    sequence = True
    symbol_encodings = KINDS
    net: ClassVar[tuple[str, str, str]]  # (module under quant_cli.models.torch, config class, network class)

    # ---- inputs: a PanelRows, or a plain matrix made into one ---------------------------------------

    def fit(self, X, y, *, feature_names, symbols=None, ts=None, X_val=None, symbols_val=None, **kwargs):
        X = as_panel_rows(X, symbols, ts)
        if X_val is not None:
            X_val = as_panel_rows(X_val, symbols_val)
            symbols_val = X_val.symbols
        return super().fit(X, y, feature_names=feature_names, symbols=X.symbols, ts=X.ts if ts is None else ts,
                           X_val=X_val, symbols_val=symbols_val, **kwargs)

    def predict(self, X, *, symbols=None) -> np.ndarray:
        X = as_panel_rows(X, symbols)
        return super().predict(X, symbols=X.symbols)

    def predict_proba(self, X, *, symbols=None) -> np.ndarray:
        X = as_panel_rows(X, symbols)
        return super().predict_proba(X, symbols=X.symbols)

    def _check_X(self, X: PanelRows, n_features: int, what: str) -> PanelRows:
        values = X.panel.values
        if X.panel.n_features != n_features:
            raise ModelError(f"model '{self.name}': {what} must have {n_features} feature columns, got {X.panel.n_features}")
        if not all(np.isfinite(values[i:i + _CHECK_ROWS]).all() for i in range(0, len(values), _CHECK_ROWS)):
            raise ModelError(f"model '{self.name}' cannot handle missing feature values (or infinite ones) in {what}; "
                             "set preprocess.fill = \"zero\" or \"median\"")
        return X

    def _rows(self, X: PanelRows, symbols, ts=None, t1=None) -> Inputs:
        ids = self.encoder_.ids(X.symbols) if self.encoder_.kind != "none" else None
        return Inputs(X, ids, X.symbols, None if ts is None else np.asarray(ts).reshape(-1),
                      None if t1 is None else np.asarray(t1).reshape(-1))

    def _n_inputs(self, rows: Inputs) -> int:
        return self._columns(rows.X.panel).shape[1]

    def needs_bars(self) -> bool:
        return self.params["inputs"] != "features"

    def _columns(self, panel) -> np.ndarray:
        """The panel columns this model reads (model.params.inputs); the bar channels must match the fit's."""
        inputs = self.params["inputs"]
        if inputs != "features":
            if not panel.channels:
                raise ModelError(f"model.params.inputs {inputs!r} needs raw-bar channels beside the features; train through "
                                 "a run (`qfactory train`), which builds them from the run's bars, or pass a Panel with channels")
            fitted = getattr(self, "channels_", None)
            if fitted is not None and list(panel.channels) != fitted:
                raise ModelError(f"model '{self.name}' was fit on bar channels {fitted} but got {list(panel.channels)}; "
                                 "use the same [features] timeframes")
        return panel.columns(inputs)

    def _samples(self, rows: Inputs, y=None, w=None):
        import torch

        from quant_cli.models.torch.loop import to_device
        from quant_cli.models.torch.windows import Samples

        X: PanelRows = rows.X
        mask = X.full_window(self.params["seq_len"])
        dev = self.device_

        def tensor(a, dtype):
            return None if a is None else to_device(np.asarray(a)[mask], dev, dtype)

        y_dtype = torch.int64 if self.is_classifier else torch.float32
        seq_len = self.params["seq_len"]
        # pnl loss: the window ending one row earlier, when the symbol has a full one there
        prev = np.where(X.panel.position[X.rows] >= seq_len, X.rows - 1, -1) if self.loop.loss == "pnl" else None
        samples = Samples(self._panel_tensor(X), tensor(X.rows, torch.int64).to(self._panel_device), seq_len,
                          tensor(rows.ids, torch.int64), tensor(y, y_dtype), tensor(w, torch.float32),
                          tensor(timestamp_codes(X.ts), torch.int64), tensor(prev, torch.int64))
        return samples, mask

    def _panel_tensor(self, X: PanelRows):
        """The panel as one float32 tensor, moved once per fit (train and val share it)."""
        from quant_cli.models.torch.loop import panel_device, to_device

        import torch

        cached = getattr(self, "_panel_cache", None)
        if cached is None or cached[0] is not X.panel:
            self._panel_device = panel_device(X.panel.values.nbytes, self.device_)
            self._panel_cache = (X.panel, to_device(self._columns(X.panel), self._panel_device, torch.float32))
        return self._panel_cache[1]

    def _release(self) -> None:
        self._panel_cache = None

    # ---- the network ---------------------------------------------------------------------------------

    def _module(self):
        import importlib

        return importlib.import_module(f"quant_cli.models.torch.{self.net[0]}")

    def _net_config(self, n_inputs: int):
        kind = self.encoder_.kind
        return getattr(self._module(), self.net[1])(
            n_inputs=n_inputs, n_outputs=self.n_classes if self.is_classifier else 1, dropout=self.params["dropout"],
            symbol_kind=kind, n_symbols=len(self.encoder_.symbols_), embedding_dim=self.params["embedding_dim"],
            **self._architecture())

    def _architecture(self) -> dict[str, Any]:
        """The family's own config fields, from model.params."""
        return {k: v for k, v in self.params.items() if k not in _COMMON}

    def _build(self, config):
        return getattr(self._module(), self.net[2])(config)

    def _config_from_json(self, data: dict[str, Any]):
        return getattr(self._module(), self.net[1])(**data)

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.__dict__.pop("channels_", None)
        super()._fit(train, y, val, y_val, sample_weight, early_stopping)
        self.channels_ = list(train.X.panel.channels) if self.needs_bars() else []

    def _fit_info(self) -> dict[str, Any]:
        return {**super()._fit_info(), "channels": self.channels_}

    def _load_native(self, folder, meta: dict[str, Any]) -> None:
        super()._load_native(folder, meta)
        self.channels_ = list(meta["fit_info"].get("channels", []))


class _RecurrentModel(SequenceModel):
    net = ("recurrent", "RecurrentConfig", "Recurrent")
    cell: ClassVar[str]
    defaults = {**_COMMON, "hidden": 64, "layers": 1}
    limits = {**_COMMON_LIMITS, "hidden": at_least(1), "layers": between(1, 16)}

    def _architecture(self) -> dict[str, Any]:
        return {**super()._architecture(), "cell": self.cell}


class LSTMModel(_RecurrentModel):
    name = "lstm"
    cell = "lstm"


class GRUModel(_RecurrentModel):
    name = "gru"
    cell = "gru"


class TCNModel(SequenceModel):
    name = "tcn"
    net = ("tcn", "TCNConfig", "TCN")
    defaults = {**_COMMON, "channels": 32, "levels": 4, "kernel_size": 3}
    limits = {**_COMMON_LIMITS, "channels": at_least(1), "levels": between(1, 16), "kernel_size": between(2, 64)}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        field = receptive_field(p["levels"], p["kernel_size"])
        if field < p["seq_len"]:
            raise ModelError(f"model 'tcn': the receptive field of {p['levels']} levels with kernel_size {p['kernel_size']} is "
                             f"{field} steps, shorter than seq_len {p['seq_len']}, so the oldest steps would be ignored; "
                             "raise model.params.levels or kernel_size, or lower seq_len")


class TransformerModel(SequenceModel):
    name = "transformer"
    net = ("transformer", "TransformerConfig", "Transformer")
    defaults = {**_COMMON, "d_model": 32, "heads": 4, "layers": 2, "ff_mult": 2, "positions": "learned", "pooling": "last",
                "checkpoint": False}
    limits = {**_COMMON_LIMITS, "d_model": at_least(2), "heads": at_least(1), "layers": between(1, 32), "ff_mult": at_least(1),
              "positions": choice("learned", "rotary"), "pooling": choice("last", "attention")}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        if p["d_model"] % p["heads"] or (p["positions"] == "rotary" and (p["d_model"] // p["heads"]) % 2):
            raise ModelError(f"model 'transformer': d_model {p['d_model']} must split into {p['heads']} heads"
                             f"{' of an even width (rotary positions)' if p['positions'] == 'rotary' else ''}; "
                             "change model.params.d_model or heads")

    def _architecture(self) -> dict[str, Any]:
        return {**super()._architecture(), "seq_len": self.params["seq_len"]}
