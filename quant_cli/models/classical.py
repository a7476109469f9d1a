"""scikit-learn models: linear (ridge / elastic net), logistic, random and extra trees, SVM.

Saving. scikit-learn has no native non-pickle format. Linear and logistic models are fully
described by their coefficients, so they are saved as JSON and predicted with our own two lines
of algebra (identical before and after a reload, readable by anything). Forests and SVMs hold
thousands of trees / support vectors in sklearn's private structures; they are saved with joblib
(pickle). A pickle runs code when loaded, so load them only from runs and bundles you made — a
bundle's SHA-256 manifest is verified before anything in it is loaded.

TOML has no null: `max_depth = 0` means "no limit"; `class_weight` is "none" or "balanced".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quant_cli.errors import ModelError, one_of
from quant_cli.io import read_json, write_json_atomic
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.device import notice_once


def _check_range(model: Model, key: str, low: float, high: float) -> None:
    value = model.params[key]
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise ModelError(f"model.params.{key} must be a number in [{low}, {high}] for '{model.name}', got {value!r}")


def _check_choice(model: Model, key: str, allowed: tuple[str, ...]) -> None:
    if model.params[key] not in allowed:
        raise ModelError(f"model.params.{key} {model.params[key]!r} is not valid for '{model.name}'; allowed: {one_of(allowed)}")


def _class_weight(value: str) -> str | None:
    return None if value == "none" else value


# ---- coefficient models: saved as JSON -----------------------------------------------------------


class _Coefficients(Model):
    """Models that are a weight matrix and an intercept: (n, p) @ (p, m) + (m,)."""

    sample_weights = True
    importance = True

    def _keep(self, estimator: Any) -> None:
        self.coef_ = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))        # (m, p)
        self.intercept_ = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))  # (m,)

    def _linear(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_.T + self.intercept_  # (n, m)

    def feature_importance(self) -> dict[str, float]:
        # Features arrive z-scored, so |coefficient| compares across features.
        return {n: float(v) for n, v in zip(self.input_names_, np.abs(self.coef_).mean(axis=0))}

    def _save_native(self, folder: Path) -> None:
        write_json_atomic(folder / "coefficients.json", {"coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()})

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        data = read_json(folder / "coefficients.json")
        self.coef_ = np.asarray(data["coef"], dtype=np.float64)
        self.intercept_ = np.asarray(data["intercept"], dtype=np.float64)


class LinearModel(_Coefficients):
    """Ridge when l1_ratio = 0, elastic net otherwise (alpha is in the label's units²)."""

    name = "linear"
    family = "linear"
    tasks = ("regression",)
    defaults = {"alpha": 1.0, "l1_ratio": 0.0, "fit_intercept": True, "max_iter": 5000}

    def _check_params(self) -> None:
        _check_range(self, "alpha", 0.0, float("inf"))
        _check_range(self, "l1_ratio", 0.0, 1.0)

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from sklearn.linear_model import ElasticNet, Ridge

        p = self.params
        if p["l1_ratio"] == 0:
            estimator = Ridge(alpha=p["alpha"], fit_intercept=p["fit_intercept"])
        else:
            estimator = ElasticNet(alpha=p["alpha"], l1_ratio=p["l1_ratio"], fit_intercept=p["fit_intercept"],
                                   max_iter=p["max_iter"], random_state=self.seed)
        self._keep(estimator.fit(train.X, y, sample_weight=sample_weight))

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._linear(rows.X)[:, 0]


class LogisticModel(_Coefficients):
    """L2 (l1_ratio = 0, lbfgs) or elastic-net (saga) logistic regression; multinomial for K > 2."""

    name = "logistic"
    family = "linear"
    tasks = ("classification",)
    defaults = {"C": 1.0, "l1_ratio": 0.0, "max_iter": 1000, "class_weight": "none"}

    def _check_params(self) -> None:
        _check_range(self, "C", 1e-12, float("inf"))
        _check_range(self, "l1_ratio", 0.0, 1.0)
        _check_choice(self, "class_weight", ("none", "balanced"))

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from sklearn.linear_model import LogisticRegression

        p = self.params
        estimator = LogisticRegression(C=p["C"], l1_ratio=p["l1_ratio"], max_iter=p["max_iter"],
                                       solver="lbfgs" if p["l1_ratio"] == 0 else "saga",
                                       class_weight=_class_weight(p["class_weight"]), random_state=self.seed)
        self._keep(estimator.fit(train.X, y, sample_weight=sample_weight))

    def _predict(self, rows: Inputs) -> np.ndarray:
        z = self._linear(rows.X)  # (n, 1) binary logit, or (n, K) multinomial logits
        if z.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p1, p1])
        z = z - z.max(axis=1, keepdims=True)  # stable softmax
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


# ---- pickled estimators: forests and SVMs ---------------------------------------------------------


class _Pickled(Model):
    def _save_native(self, folder: Path) -> None:
        import joblib

        joblib.dump(self.estimator_, folder / "model.joblib")

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        import joblib

        self.estimator_ = joblib.load(folder / "model.joblib")


class _Forest(_Pickled):
    family = "forest"
    tasks = TASKS
    sample_weights = True
    importance = True
    missing_values = True  # sklearn trees route NaN since 1.4 (random forest) / 1.6 (extra trees)
    defaults = {"n_estimators": 300, "max_depth": 0, "min_samples_leaf": 50, "max_features": 0.5,
                "bootstrap": True, "max_samples": 1.0, "class_weight": "none"}

    def _check_params(self) -> None:
        _check_range(self, "max_samples", 1e-9, 1.0)
        _check_choice(self, "class_weight", ("none", "balanced"))
        if not self.is_classifier and self.params["class_weight"] != "none":
            raise ModelError(f"model.params.class_weight applies to classification only; '{self.name}' is a regression model here")

    def _estimator_kwargs(self) -> dict[str, Any]:
        p = self.params
        kwargs = {"n_estimators": p["n_estimators"], "max_depth": p["max_depth"] or None,
                  "min_samples_leaf": p["min_samples_leaf"], "max_features": p["max_features"],
                  "bootstrap": p["bootstrap"], "n_jobs": self._n_jobs(), "random_state": self.seed}
        if p["bootstrap"]:  # sklearn refuses max_samples without bootstrap
            kwargs["max_samples"] = p["max_samples"]
        if self.is_classifier:
            kwargs["class_weight"] = _class_weight(p["class_weight"])
        return kwargs

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.estimator_ = self._sklearn_class()(**self._estimator_kwargs()).fit(train.X, y, sample_weight=sample_weight)

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self.estimator_.predict_proba(rows.X) if self.is_classifier else self.estimator_.predict(rows.X)

    def feature_importance(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.input_names_, self.estimator_.feature_importances_)}


class RandomForestModel(_Forest):
    name = "random_forest"

    def _sklearn_class(self):
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        return RandomForestClassifier if self.is_classifier else RandomForestRegressor


class ExtraTreesModel(_Forest):
    name = "extra_trees"
    defaults = {**_Forest.defaults, "bootstrap": False}

    def _sklearn_class(self):
        from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

        return ExtraTreesClassifier if self.is_classifier else ExtraTreesRegressor


class SVMModel(_Pickled):
    """Kernel SVM (SVR / SVC with sigmoid-calibrated probabilities).

    Training costs O(n²) memory and time, so at most `max_train_rows` rows are used (an evenly
    spaced subsample, with a notice). Regression labels are standardised inside the model so
    `epsilon` and `C` mean the same whatever the label's scale.
    """

    name = "svm"
    family = "svm"
    tasks = TASKS
    sample_weights = True
    defaults = {"kernel": "rbf", "C": 1.0, "gamma": "scale", "epsilon": 0.1, "max_train_rows": 20000,
                "calibration_folds": 3}

    def _check_params(self) -> None:
        _check_choice(self, "kernel", ("rbf", "linear", "poly", "sigmoid"))
        _check_range(self, "C", 1e-12, float("inf"))

    def _subsample(self, n: int) -> np.ndarray:
        limit = int(self.params["max_train_rows"])
        if n <= limit:
            return np.arange(n)
        notice_once(f"svm:rows:{n}", f"svm trains on {limit:,} of {n:,} rows (model.params.max_train_rows); kernel SVMs scale as n²")
        return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        rows = self._subsample(len(y))
        X, y = train.X[rows], y[rows]
        weight = None if sample_weight is None else sample_weight[rows]
        self.train_rows_used_ = len(rows)
        self.estimator_ = self._classifier() if self.is_classifier else self._regressor(y)
        self.estimator_.fit(X, y if self.is_classifier else (y - self.y_mean_) / self.y_std_, sample_weight=weight)

    def _regressor(self, y: np.ndarray):
        from sklearn.svm import SVR

        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        p = self.params
        return SVR(kernel=p["kernel"], C=p["C"], gamma=p["gamma"], epsilon=p["epsilon"])

    def _classifier(self):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        p = self.params
        svc = SVC(kernel=p["kernel"], C=p["C"], gamma=p["gamma"], random_state=self.seed)
        # Platt scaling fit on out-of-fold decision values, then one SVC refit on all rows.
        return CalibratedClassifierCV(svc, method="sigmoid", cv=p["calibration_folds"], ensemble=False)

    def _predict(self, rows: Inputs) -> np.ndarray:
        if self.is_classifier:
            return self.estimator_.predict_proba(rows.X)
        return self.estimator_.predict(rows.X) * self.y_std_ + self.y_mean_

    def _fit_info(self) -> dict[str, Any]:
        info = {"train_rows_used": getattr(self, "train_rows_used_", None)}
        if not self.is_classifier:
            info.update(y_mean=self.y_mean_, y_std=self.y_std_)
        return info

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        super()._load_native(folder, meta)
        info = meta["fit_info"]
        self.train_rows_used_ = info["train_rows_used"]
        if not self.is_classifier:
            self.y_mean_, self.y_std_ = info["y_mean"], info["y_std"]
