"""The base of every window model (lstm, gru, tcn, transformer, ...): a model over windows of a
symbol's rows.

An architecture subclasses `SequenceModel` in its own file under models/torch/, with a config
dataclass derived from `SequenceConfig` (seq_len, inputs, dropout, embedding_dim and its own
parameters). Everything below is shared: windows, inputs (features and/or raw-bar channels), checks.

The input of prediction row (symbol, t) is that symbol's last `seq_len` rows ending at t
(inclusive), read from a `Panel` of every row (quant_cli.models.panel) — purged and embargoed
rows still supply past inputs, never labels. Rows without a full window (the first seq_len - 1
rows of each symbol) are not trained on and not scored: `predict` gives NaN for them and the
train stage leaves them out of predictions.parquet, so everything downstream joins by
(symbol, ts). `fit`/`predict` also take a plain (n, F) matrix with `symbols` (and `ts`): each
symbol's rows are then its whole history.

Every window model supports regression and classification and the symbol encodings none, one_hot,
index and embedding (quant_cli.models.torch.heads), with the same unseen-symbol policy as the
tabular models, and reads raw-bar channels when model.params.inputs asks for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.models.base import Inputs
from quant_cli.models.encoding import KINDS
from quant_cli.models.panel import PanelRows, as_panel_rows
from quant_cli.models.torchmodel import TorchModel

_CHECK_ROWS = 65_536  # panel rows checked at once: the check's temporary stays small


class SequenceModel(TorchModel):
    tabular = False
    sequence = True
    bar_channels = True
    symbol_encodings = KINDS

    # ---- inputs: a PanelRows, or a plain matrix made into one ---------------------------------------

    def fit(self, X, y, *, feature_names, symbols=None, ts=None, X_val=None, symbols_val=None, **kwargs):
        X = as_panel_rows(X, symbols, ts)
        if X_val is not None:
            X_val = as_panel_rows(X_val, symbols_val)
            symbols_val = X_val.symbols
        return super().fit(
            X,
            y,
            feature_names=feature_names,
            symbols=X.symbols,
            ts=X.ts if ts is None else ts,
            X_val=X_val,
            symbols_val=symbols_val,
            **kwargs,
        )

    def predict(self, X, *, symbols=None) -> np.ndarray:
        X = as_panel_rows(X, symbols)
        return super().predict(X, symbols=X.symbols)

    def predict_proba(self, X, *, symbols=None) -> np.ndarray:
        X = as_panel_rows(X, symbols)
        return super().predict_proba(X, symbols=X.symbols)

    def _check_X(self, X: PanelRows, n_features: int, what: str) -> PanelRows:
        values = X.panel.values
        if X.panel.n_features != n_features:
            raise ModelError(
                f"model '{self.name}': {what} must have {n_features} feature columns, got {X.panel.n_features}"
            )
        if not all(np.isfinite(values[i : i + _CHECK_ROWS]).all() for i in range(0, len(values), _CHECK_ROWS)):
            raise ModelError(
                f"model '{self.name}' cannot handle missing feature values (or infinite ones) in {what}; "
                'set preprocess.fill = "zero" or "median"'
            )
        return X

    def _rows(self, X: PanelRows, symbols, ts=None, t1=None) -> Inputs:
        ids = self.encoder_.ids(X.symbols) if self.encoder_.kind != "none" else None
        return Inputs(
            X,
            ids,
            X.symbols,
            None if ts is None else np.asarray(ts).reshape(-1),
            None if t1 is None else np.asarray(t1).reshape(-1),
        )

    def _n_inputs(self, rows: Inputs) -> int:
        return self._columns(rows.X.panel).shape[1]

    def needs_bars(self) -> bool:
        return self.params["inputs"] != "features"

    def _columns(self, panel) -> np.ndarray:
        """The panel columns this model reads (model.params.inputs); the bar channels must match the fit's."""
        inputs = self.params["inputs"]
        if inputs != "features":
            if not panel.channels:
                raise ModelError(
                    f"model.params.inputs {inputs!r} needs raw-bar channels beside the features; train through "
                    "a run (`qfactory train`), which builds them from the run's bars, or pass a Panel with channels"
                )
            fitted = getattr(self, "channels_", None)
            if fitted is not None and list(panel.channels) != fitted:
                raise ModelError(
                    f"model '{self.name}' was fit on bar channels {fitted} but got {list(panel.channels)}; "
                    "use the same [features] timeframes"
                )
        return panel.columns(inputs)

    def _samples(self, rows: Inputs, y=None, w=None):
        import torch

        from quant_cli.models.torch.loop import to_device
        from quant_cli.models.torch.windows import Samples, timestamp_codes

        X: PanelRows = rows.X
        mask = X.full_window(self.params["seq_len"])
        dev = self.device_

        def tensor(a, dtype):
            return None if a is None else to_device(np.asarray(a)[mask], dev, dtype)

        y_dtype = torch.int64 if self.is_classifier else torch.float32
        seq_len = self.params["seq_len"]
        # the window ending one row earlier, when the symbol has a full one there: the pnl loss's previous
        # score, and the previous position of the validation PnL telemetry (models/torch/telemetry.py)
        prev = np.where(X.panel.position[X.rows] >= seq_len, X.rows - 1, -1)
        samples = Samples(
            self._panel_tensor(X),
            tensor(X.rows, torch.int64).to(self._panel_device),
            seq_len,
            tensor(rows.ids, torch.int64),
            tensor(y, y_dtype),
            tensor(w, torch.float32),
            tensor(timestamp_codes(X.ts), torch.int64),
            tensor(prev, torch.int64),
        )
        return samples, mask

    def windows(self, X: PanelRows):
        """(Samples of the scorable windows of `X` on the model's device, (n,) bool mask of the rows
        they cover): what fine-tuning (quant_cli.finetune) forwards the network on."""
        return self._samples(self._rows(X, X.symbols))

    def _panel_tensor(self, X: PanelRows):
        """The panel as one float32 tensor, moved once per fit (train and val share it)."""
        import torch

        from quant_cli.models.torch.loop import panel_device, to_device

        cached = getattr(self, "_panel_cache", None)
        if cached is None or cached[0] is not X.panel:
            self._panel_device = panel_device(X.panel.values.nbytes, self.device_)
            self._panel_cache = (X.panel, to_device(self._columns(X.panel), self._panel_device, torch.float32))
        return self._panel_cache[1]

    def _release(self) -> None:
        self._panel_cache = None

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.__dict__.pop("channels_", None)
        super()._fit(train, y, val, y_val, sample_weight, early_stopping)
        self.channels_ = list(train.X.panel.channels) if self.needs_bars() else []

    def _fit_info(self) -> dict[str, Any]:
        return {**super()._fit_info(), "channels": self.channels_}

    def _load_native(self, folder, meta: dict[str, Any]) -> None:
        super()._load_native(folder, meta)
        self.channels_ = list(meta["fit_info"].get("channels", []))
