"""The model contract (DESIGN.md §6), scikit-learn style.

`__init__` only validates and stores parameters; `fit` returns self and sets attributes ending
in `_`; `predict` refuses to run before `fit`; `save`/`load` use the library's native format.

The public `fit`/`predict` live here and do everything models share — input checks, the symbol
encoding, mapping class labels to 0..K-1, the device — then call the family's `_fit`/`_predict`
with an `Inputs` bundle. A family implements `_fit`, `_predict`, `_save_native`, `_load_native`.

Tasks. `regression` predicts the label. `classification` learns discrete labels (binary 0/1 or
-1/1, or direction -1/0/1); `predict_proba` gives one column per class in `classes_` order and
`predict` gives the expected class value Σ p_k·class_k, a score that ranks like a regression
output, so metrics and backtests treat both tasks alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quant_cli.errors import ModelError, one_of, suggest
from quant_cli.io import read_json, write_json_atomic
from quant_cli.models.device import check_device, is_cuda, notice_once, resolve_device
from quant_cli.models.encoding import KINDS, UNSEEN_POLICIES, SymbolEncoder, check_choice
from quant_cli.models.panel import PanelRows
from quant_cli.models.params import Limit, check_params, library_message
from quant_cli.report import SILENT, Reporter
from quant_cli.schema import KNOWN_FUTURE_FIELDS

TASKS = ("regression", "classification")

# A fitting loop's progress hook (`Model.fit(report=...)`): called after each boosting round or
# epoch with the step number (1, 2, ...) and a function returning the model's current scores on
# the validation rows (what `predict` would give, computed only if called). It may raise to stop
# fitting — tuning raises `quant_cli.tune.objective.Pruned` to prune a trial.
StepReport = Callable[[int, Callable[[], np.ndarray]], None]

# More distinct labels than this is almost surely a continuous target given to a classifier.
MAX_CLASSES = 20


@dataclass(frozen=True)
class Inputs:
    """What a family's `_fit`/`_predict` sees for one set of rows."""

    X: np.ndarray  # (n, p) float64 (float32 where float32_inputs): features, then symbol-encoding columns
    ids: np.ndarray | None = None  # (n,) int64 symbol ids for embeddings; 0 = unseen
    symbols: np.ndarray | None = None  # (n,) raw symbols (ensembles hand them to members)
    ts: np.ndarray | None = None  # (n,) row timestamps (stacking's purged folds)
    t1: np.ndarray | None = None  # (n,) label end times

    def take(self, rows: np.ndarray) -> Inputs:
        return replace(self, **{k: None if v is None else v[rows] for k, v in vars(self).items()})


def normalise(proba: np.ndarray) -> np.ndarray:
    """Rows rescaled in float64 to sum to 1: libraries return float32 probabilities (XGBoost) whose
    rows miss 1 by ~1e-7, which scikit-learn's log_loss reports as a warning."""
    proba = np.asarray(proba, dtype=np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


# Every concrete model class, by name: a class that declares `name` in its body registers itself
# when its module is imported (quant_cli.models.registry imports the model modules).
REGISTERED: dict[str, type[Model]] = {}

OUTPUTS = ("score", "path")


class Model(ABC):
    name: ClassVar[str]
    family: ClassVar[str]
    # ---- capability flags: what the model takes and gives; a recipe asking for more is refused at load
    tasks: ClassVar[tuple[str, ...]]  # gives: regression and/or classification
    output: ClassVar[str] = "score"  # gives: one score per row, or a multi-step "path"
    tabular: ClassVar[bool] = True  # takes: one row of features per prediction
    sequence: ClassVar[bool] = False  # takes: past feature windows (the symbol's rows up to t)
    bar_channels: ClassVar[bool] = False  # takes: raw-bar channels (model.params.inputs = bars/both)
    static_covariates: ClassVar[bool] = False  # takes: static text columns per symbol (model.static_columns)
    known_future: ClassVar[bool] = False  # takes: calendar fields of the bars after t (model.known_future)
    # takes: every symbol scored at the same t at once; a row's score depends on those rows (all ending at t)
    cross_section: ClassVar[bool] = False
    sample_weights: ClassVar[bool] = False
    gpu: ClassVar[bool] = False
    early_stopping: ClassVar[bool] = False  # stops on the validation rows when asked
    importance: ClassVar[bool] = False  # feature_importance() returns something
    missing_values: ClassVar[bool] = False  # accepts NaN features
    float32_inputs: ClassVar[bool] = False  # takes float32 X as given (no float64 copy of the matrix)
    symbol_encodings: ClassVar[tuple[str, ...]] = ("none", "one_hot")  # takes: the symbol as a static covariate
    # Declared parameters and their defaults: anything else is a typo and an error. A value's type
    # is the default's; `limits` bounds the values that have limits (quant_cli.models.params);
    # `docs` holds a one-line doc per parameter where the model declares one.
    defaults: ClassVar[dict[str, Any]] = {}
    limits: ClassVar[dict[str, Limit]] = {}
    docs: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        """Register a class that names itself (`name = ...` in its body); bases name nothing. A test
        double passes `register=False` and is put in REGISTERED by the test that needs it."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not register or name is None:
            return
        known = REGISTERED.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"model name {name!r} of {cls.__module__}.{cls.__qualname__} is taken by "
                f"{known.__module__}.{known.__qualname__}; pick another name"
            )
        if cls.output not in OUTPUTS:
            raise TypeError(f"model {name!r}: output {cls.output!r} is not one of {OUTPUTS}")
        REGISTERED[name] = cls

    def __init__(
        self,
        *,
        task: str = "regression",
        seed: int = 42,
        threads: int = 0,
        device: str = "cpu",
        symbol_encoding: str = "none",
        unseen_symbols: str = "error",
        reporter: Reporter = SILENT,
        train: dict[str, Any] | None = None,
        static_columns: list[str] | None = None,
        known_future: list[str] | None = None,
        **params: Any,
    ) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ModelError(
                f"model.params.{unknown[0]} is not a parameter of model "
                f"'{self.name}'{suggest(unknown[0], self.defaults)}; "
                f"allowed: {one_of(self.defaults)}; `qfactory train --list-models` lists each model's parameters"
            )
        if task not in self.tasks:
            raise ModelError(f"model.task {task!r} is not supported by '{self.name}'; allowed: {one_of(self.tasks)}")
        check_choice("model.symbol_encoding", symbol_encoding, KINDS)
        if symbol_encoding not in self.symbol_encodings:
            raise ModelError(
                f"model.symbol_encoding {symbol_encoding!r} is not supported by '{self.name}'; "
                f"allowed: {one_of(self.symbol_encodings)}"
            )
        self.task = task
        self.train_settings = dict(train or {})  # the [train] section: the torch models' loop settings
        self.reporter = reporter  # notices at fit time (GPU fallback, ignored weights)
        self.seed = seed
        self.threads = threads
        self.device = check_device(device)
        self.symbol_encoding = symbol_encoding
        self.unseen_symbols = check_choice("model.unseen_symbols", unseen_symbols, UNSEEN_POLICIES)
        self.static_columns, self.known_future_fields = self._check_covariates(static_columns, known_future)
        self.params = check_params(self.name, {**self.defaults, **params}, self.defaults, self.limits)
        self._check_params()

    def _check_covariates(self, static: list[str] | None, future: list[str] | None) -> tuple[list[str], list[str]]:
        """model.static_columns and model.known_future, checked against the flags (the recipe loader refuses
        them first; this is for library callers)."""
        static, future = list(static or []), list(future or [])
        if static and not self.static_covariates:
            raise ModelError(f"model '{self.name}' does not take static covariates; remove model.static_columns")
        if future and not self.known_future:
            raise ModelError(f"model '{self.name}' does not take known-future covariates; remove model.known_future")
        for field in future:
            check_choice("model.known_future", field, KNOWN_FUTURE_FIELDS)
        return static, future

    def _check_params(self) -> None:
        """Checks beyond each value's type and range (names and `limits` are checked above)."""

    def _library_errors(self) -> tuple[type[BaseException], ...]:
        """The library's own error types, raised in `_fit` when it rejects its parameters."""
        return ()

    # ---- the family's part -------------------------------------------------------------------

    @abstractmethod
    def _fit(
        self,
        train: Inputs,
        y: np.ndarray,
        val: Inputs | None,
        y_val: np.ndarray | None,
        sample_weight: np.ndarray | None,
        early_stopping: int,
    ) -> None:
        """y is float64 (regression) or int64 class codes 0..K-1 (classification)."""

    @abstractmethod
    def _predict(self, rows: Inputs) -> np.ndarray:
        """(n,) predictions (regression) or (n, K) class probabilities (classification)."""

    @abstractmethod
    def _save_native(self, folder: Path) -> None: ...

    @abstractmethod
    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None: ...

    def _fit_info(self) -> dict[str, Any]:
        return {}

    def uses_panel(self) -> bool:
        """Whether fit/predict take a `PanelRows` (every row of each symbol, for windows) rather than
        a matrix of the rows alone: sequence models, and ensembles with a sequence member."""
        return self.sequence

    def needs_bars(self) -> bool:
        """Whether the panel must carry raw-bar channels (quant_cli.features.bars) beside the features."""
        return False

    def reads_bars(self) -> bool:
        """Whether the panel needs anything from the bars beside the features: raw-bar channels or static
        columns (quant_cli.models.covariates.bar_inputs builds it)."""
        return self.needs_bars() or bool(self.static_columns)

    def set_checkpoints(self, folder: Path | None, resume: bool = False) -> None:
        """Where a model that trains in epochs keeps per-epoch checkpoints (others ignore it)."""

    def _accepts_missing(self) -> bool:
        return self.missing_values

    def _encoder_kind(self) -> str:
        """The encoding applied to this model's own inputs (ensembles hand theirs to members)."""
        return self.symbol_encoding

    # ---- shared behaviour ----------------------------------------------------------------------

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def n_classes(self) -> int:
        return len(self.classes_) if self.is_classifier else 1

    def _scores(self, output: np.ndarray) -> np.ndarray:
        """`predict`'s scores from the family's raw `_predict` output (for StepReport)."""
        if self.is_classifier:
            return normalise(output) @ np.asarray(self.classes_, dtype=np.float64)
        return np.asarray(output, dtype=np.float64).reshape(-1)

    def is_fitted(self) -> bool:
        return hasattr(self, "feature_names_")

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        feature_names: list[str],
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        early_stopping: int = 0,
        symbols: np.ndarray | None = None,
        symbols_val: np.ndarray | None = None,
        ts: np.ndarray | None = None,
        t1: np.ndarray | None = None,
        report: StepReport | None = None,
    ) -> Model:
        """Fit on (X, y); X_val/y_val drive early stopping where the model supports it.

        symbols/symbols_val: the symbol of each row, required by a symbol encoding.
        ts/t1: row timestamps and label end times, required by stacking (purged folds).
        report: a StepReport the family's loop calls per round/epoch when it has one (LightGBM,
        XGBoost; models without a loop ignore it). Read by `_fit` as `self._report`; never saved.
        """
        self.__dict__.pop("feature_names_", None)  # a failed refit must not look fitted
        X = self._check_X(X, len(feature_names), "X")
        y = self._check_y(y, len(X), "y")
        self.encoder_ = SymbolEncoder(self._encoder_kind(), self.unseen_symbols).fit(symbols)
        self.input_names_ = [*feature_names, *self.encoder_.columns()]
        targets = self._targets(y)
        train = self._rows(X, symbols, ts=ts, t1=t1)
        val, val_targets = None, None
        if X_val is not None and len(X_val):
            X_val = self._check_X(X_val, len(feature_names), "X_val")
            val = self._rows(X_val, symbols_val)
            val_targets = self._val_targets(self._check_y(y_val, len(X_val), "y_val"))
        weights = self._check_weights(sample_weight, len(X))
        self.device_ = self._device()
        self._report = report if val is not None else None
        try:
            self._fit(train, targets, val, val_targets, weights, int(early_stopping))
        except self._library_errors() as exc:
            raise ModelError(
                f"model '{self.name}' could not be fit: {library_message(exc)}; check model.params "
                "(`qfactory train --list-models` lists each model's parameters)"
            ) from None
        finally:
            self._report = None
        self.feature_names_ = list(feature_names)
        return self

    def predict(self, X: np.ndarray, *, symbols: np.ndarray | None = None) -> np.ndarray:
        """(n,) float64 scores: the prediction, or Σ p_k·class_k for a classifier."""
        out = self._output(X, symbols)
        if self.is_classifier:
            out = out @ np.asarray(self.classes_, dtype=np.float64)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_proba(self, X: np.ndarray, *, symbols: np.ndarray | None = None) -> np.ndarray:
        """(n, K) float64 class probabilities, columns in `classes_` order; each row sums to 1."""
        if not self.is_classifier:
            raise ModelError(
                f"predict_proba needs model.task = 'classification'; model '{self.name}' is a {self.task} model"
            )
        return self._output(X, symbols)

    def _output(self, X: np.ndarray, symbols: np.ndarray | None) -> np.ndarray:
        if not self.is_fitted():
            raise ModelError(f"model '{self.name}' is not fitted; call fit() before predict()")
        X = self._check_X(X, len(self.feature_names_), "X")
        if len(X) == 0:  # some libraries refuse empty input; an empty segment is not an error
            return np.zeros((0, self.n_classes)) if self.is_classifier else np.zeros(0)
        out = self._predict(self._rows(X, symbols))
        return normalise(out) if self.is_classifier else out

    def _rows(self, X: np.ndarray, symbols: np.ndarray | None, ts=None, t1=None) -> Inputs:
        keys = {"symbols": symbols, "ts": ts, "t1": t1}
        keys = {k: None if v is None else np.asarray(v).reshape(-1) for k, v in keys.items()}
        for key, values in keys.items():
            if values is not None and len(values) != len(X):
                raise ModelError(f"model '{self.name}': {key} has {len(values)} rows but the features have {len(X)}")
        ids = self.encoder_.ids(keys["symbols"]) if self.encoder_.kind == "embedding" else None
        return Inputs(self.encoder_.transform(X, keys["symbols"]), ids, **keys)

    def _check_X(self, X: np.ndarray, n_features: int, what: str) -> np.ndarray:
        if isinstance(X, PanelRows):  # a panel model's rows: ensembles pass them on, sequence models check them
            if X.panel.n_features != n_features:
                raise ModelError(
                    f"model '{self.name}': {what} must have {n_features} feature columns, got {X.panel.n_features}"
                )
            return X
        X = np.asarray(X)
        X = X if self.float32_inputs and X.dtype == np.float32 else X.astype(np.float64, copy=False)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ModelError(f"model '{self.name}': {what} must have {n_features} feature columns, got shape {X.shape}")
        if np.isinf(X).any():
            raise ModelError(f"model '{self.name}': {what} holds infinite feature values; clean or clip the features")
        if not self._accepts_missing() and np.isnan(X).any():
            raise ModelError(
                f"model '{self.name}' cannot handle missing feature values in {what}; "
                'set preprocess.fill = "zero" or "drop"'
            )
        return X

    def _check_y(self, y: np.ndarray | None, n: int, what: str) -> np.ndarray:
        if y is None:
            raise ModelError(f"model '{self.name}': {what} is missing")
        y = np.asarray(y, dtype=np.float64)
        y = y.reshape(len(y), -1) if self.output == "path" else y.reshape(-1)  # a path model: (n, horizon)
        if len(y) != n:
            raise ModelError(f"model '{self.name}': {what} has {len(y)} rows but the features have {n}")
        if not np.isfinite(y).all():
            raise ModelError(f"model '{self.name}': {what} holds missing or infinite labels; drop those rows first")
        return y

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Regression: y. Classification: codes 0..K-1 into `classes_`, set here."""
        if not self.is_classifier:
            return y
        classes = np.unique(y)
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise ModelError(
                f"model.task 'classification' needs 2..{MAX_CLASSES} distinct label values, got {len(classes)}; "
                "use a direction label (e.g. -1/0/1) or model.task = 'regression'"
            )
        self.classes_ = classes
        return np.searchsorted(classes, y).astype(np.int64)

    def _val_targets(self, y_val: np.ndarray) -> np.ndarray:
        if not self.is_classifier:
            return y_val
        unknown = np.setdiff1d(np.unique(y_val), self.classes_)
        if len(unknown):
            raise ModelError(
                f"validation labels {unknown.tolist()} are not among the training classes {self.classes_.tolist()}"
            )
        return np.searchsorted(self.classes_, y_val).astype(np.int64)

    def _check_weights(self, weight: np.ndarray | None, n: int) -> np.ndarray | None:
        if weight is None:
            return None
        if not self.sample_weights:
            raise ModelError(f"model '{self.name}' does not support sample weights; remove them or pick another model")
        weight = np.asarray(weight, dtype=np.float64).reshape(-1)
        if len(weight) != n or not np.isfinite(weight).all() or (weight < 0).any() or weight.sum() <= 0:
            raise ModelError(f"model '{self.name}': sample_weight must be {n} finite values >= 0 with a positive sum")
        return weight

    def _device(self) -> str:
        """The device this fit actually uses; GPU families override `_usable_device`."""
        resolved = resolve_device(self.device, strict=False, reporter=self.reporter)
        used = self._usable_device(resolved)
        if used != resolved:
            notice_once(
                f"{self.name}:{resolved}",
                f"model '{self.name}' cannot use device {resolved!r}; it trains on CPU",
                self.reporter,
            )
        return used

    def _usable_device(self, resolved: str) -> str:
        return resolved if self.gpu and is_cuda(resolved) else "cpu"

    def _n_jobs(self) -> int:
        """threads = 0 means all cores (-1 for the libraries that spell it so)."""
        return self.threads if self.threads > 0 else -1

    @property
    def categorical_columns(self) -> list[int]:
        """Design-matrix columns holding a category id (the `index` symbol encoding)."""
        return [len(self.input_names_) - 1] if self.encoder_.kind == "index" else []

    def feature_importance(self) -> dict[str, float] | None:
        """Importance per design-matrix column (features, then symbol-encoding columns), if any."""
        return None

    def fit_info(self) -> dict[str, Any]:
        """Facts about the fit worth recording (device used, early-stopping iteration, ...)."""
        info: dict[str, Any] = {"device": getattr(self, "device_", "cpu")}
        if getattr(self, "encoder_", None) is not None and self.encoder_.kind != "none":
            info.update(symbol_encoding=self.encoder_.kind, encoded_symbols=len(self.encoder_.symbols_))
        if self.is_classifier:
            info["classes"] = self.classes_.tolist()
        return {**info, **self._fit_info()}

    def save(self, folder: Path) -> None:
        if not self.is_fitted():
            raise ModelError(f"model '{self.name}' is not fitted; nothing to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_native(folder)
        meta = {
            "name": self.name,
            "task": self.task,
            "seed": self.seed,
            "threads": self.threads,
            "symbol_encoding": self.symbol_encoding,
            "unseen_symbols": self.unseen_symbols,
            "params": self.params,
            "train": self.train_settings,
            "static_columns": self.static_columns,
            "known_future": self.known_future_fields,
            "feature_names": self.feature_names_,
            "input_names": self.input_names_,
            "encoder": self.encoder_.to_json(),
            "classes": self.classes_.tolist() if self.is_classifier else None,
            "fit_info": self.fit_info(),
        }
        write_json_atomic(folder / "model.json", meta)

    @classmethod
    def load(cls, folder: Path) -> Model:
        """Rebuild a saved model; it predicts on CPU whatever device it was trained on."""
        folder = Path(folder)
        meta = read_json(folder / "model.json")
        model = cls(
            task=meta["task"],
            seed=meta["seed"],
            threads=meta["threads"],
            symbol_encoding=meta["symbol_encoding"],
            unseen_symbols=meta["unseen_symbols"],
            train=meta.get("train"),
            static_columns=meta.get("static_columns"),
            known_future=meta.get("known_future"),
            **meta["params"],
        )
        model.encoder_ = SymbolEncoder.from_json(meta["encoder"])
        model.input_names_ = list(meta["input_names"])
        model.device_ = "cpu"
        if meta["classes"] is not None:
            model.classes_ = np.asarray(meta["classes"])
        model._load_native(folder, meta)
        model.feature_names_ = list(meta["feature_names"])
        return model
