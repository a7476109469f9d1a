"""Gradient-boosted trees. LightGBM models are saved in LightGBM's own text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from quant_cli.models.base import Model

_LGB_FIXED = {"verbosity": -1, "deterministic": True, "force_col_wise": True}


class LightGBMModel(Model):
    name = "lightgbm"
    family = "boosting"
    tasks = ("regression",)
    sample_weights = True
    defaults = {
        "n_estimators": 500,
        "learning_rate": 0.03,
        "num_leaves": 31,
        "max_depth": -1,
        "min_data_in_leaf": 100,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l1": 0.0,
        "lambda_l2": 1.0,
        "objective": "regression",
    }

    def _lgb_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.params.items() if k != "n_estimators"}
        return {**params, **_LGB_FIXED, "seed": self.seed, "num_threads": self.threads}

    def fit(self, X, y, *, feature_names, X_val=None, y_val=None, sample_weight=None, early_stopping=0):
        train = lgb.Dataset(X, y, weight=sample_weight, feature_name=list(feature_names), free_raw_data=False)
        valid_sets, callbacks = [], []
        if X_val is not None and len(X_val) and early_stopping:
            valid_sets = [lgb.Dataset(X_val, y_val, reference=train)]
            callbacks = [lgb.early_stopping(early_stopping, verbose=False)]
        booster = lgb.train(self._lgb_params(), train, num_boost_round=self.params["n_estimators"],
                            valid_sets=valid_sets, callbacks=callbacks)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.booster_ = booster
        self.feature_names_ = list(feature_names)
        return self

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict(X, num_iteration=self.best_iteration_)

    def feature_importance(self) -> dict[str, float]:
        gains = self.booster_.feature_importance(importance_type="gain", iteration=self.best_iteration_)
        return {name: float(g) for name, g in zip(self.feature_names_, gains)}

    def _save_native(self, folder: Path) -> None:
        self.booster_.save_model(str(folder / "model.txt"), num_iteration=self.best_iteration_)

    def fit_info(self) -> dict[str, Any]:
        return {"best_iteration": self.best_iteration_}

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        self.booster_ = lgb.Booster(model_file=str(folder / "model.txt"))
        self.best_iteration_ = int(meta["best_iteration"])
