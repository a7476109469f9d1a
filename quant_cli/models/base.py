"""The model contract (DESIGN.md §6), scikit-learn style.

`__init__` only validates and stores parameters; `fit` returns self and sets attributes ending
in `_`; `predict` refuses to run before `fit`; `save`/`load` use the library's native format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quant_cli.errors import ModelError, one_of, suggest
from quant_cli.io import read_json, write_json_atomic


class Model(ABC):
    name: ClassVar[str]
    family: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    tabular: ClassVar[bool] = True
    sequence: ClassVar[bool] = False
    sample_weights: ClassVar[bool] = False
    gpu: ClassVar[bool] = False
    # Declared parameters and their defaults: anything else is a typo and an error.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, task: str = "regression", seed: int = 42, threads: int = 0, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ModelError(
                f"model.params.{unknown[0]} is not a parameter of model '{self.name}'{suggest(unknown[0], self.defaults)}; "
                f"allowed: {one_of(self.defaults)}"
            )
        if task not in self.tasks:
            raise ModelError(f"model.task {task!r} is not supported by '{self.name}'; allowed: {one_of(self.tasks)}")
        self.task = task
        self.seed = seed
        self.threads = threads
        self.params = {**self.defaults, **params}

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, *, feature_names: list[str], X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, sample_weight: np.ndarray | None = None, early_stopping: int = 0) -> Model:
        ...

    @abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray:
        ...

    @abstractmethod
    def _save_native(self, folder: Path) -> None:
        ...

    @abstractmethod
    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        ...

    def is_fitted(self) -> bool:
        return hasattr(self, "feature_names_")

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not self.is_fitted():
            raise ModelError(f"model '{self.name}' is not fitted; call fit() before predict()")
        if X.shape[1] != len(self.feature_names_):
            raise ModelError(f"model '{self.name}' was fitted on {len(self.feature_names_)} features, got {X.shape[1]}")
        return np.asarray(self._predict(X), dtype=np.float64)

    def feature_importance(self) -> dict[str, float] | None:
        return None

    def save(self, folder: Path) -> None:
        if not self.is_fitted():
            raise ModelError(f"model '{self.name}' is not fitted; nothing to save")
        folder.mkdir(parents=True, exist_ok=True)
        self._save_native(folder)
        meta = {"name": self.name, "task": self.task, "seed": self.seed, "threads": self.threads,
                "params": self.params, "feature_names": self.feature_names_, **self.fit_info()}
        write_json_atomic(folder / "model.json", meta)

    def fit_info(self) -> dict[str, Any]:
        """Facts about the fit worth recording (e.g. the early-stopping iteration)."""
        return {}

    @classmethod
    def load(cls, folder: Path) -> Model:
        meta = read_json(folder / "model.json")
        model = cls(task=meta["task"], seed=meta["seed"], threads=meta["threads"], **meta["params"])
        model.feature_names_ = list(meta["feature_names"])
        model._load_native(folder, meta)
        return model
