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

import os
from pathlib import Path
from typing import Any

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.io import read_json, write_json_atomic
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.device import notice_once
from quant_cli.models.params import Limit, above, at_least, between, choice, fraction

_CLASS_WEIGHTS = choice("none", "balanced")


def _class_weight(value: str) -> str | None:
    return None if value == "none" else value


# ---- coefficient models: saved as JSON -----------------------------------------------------------


class _Coefficients(Model):
    """Models that are a weight matrix and an intercept: (n, p) @ (p, m) + (m,)."""

    sample_weights = True
    importance = True

    def _library_errors(self):
        return _sklearn_errors()

    def _keep(self, estimator: Any) -> None:
        self.coef_ = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))  # (m, p)
        self.intercept_ = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))  # (m,)

    def _linear(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_.T + self.intercept_  # (n, m)

    def feature_importance(self) -> dict[str, float]:
        # Features arrive z-scored, so |coefficient| compares across features.
        return {n: float(v) for n, v in zip(self.input_names_, np.abs(self.coef_).mean(axis=0))}

    def _save_native(self, folder: Path) -> None:
        write_json_atomic(
            folder / "coefficients.json", {"coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}
        )

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
    limits = {"alpha": at_least(0), "l1_ratio": between(0, 1), "max_iter": at_least(1)}

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from sklearn.linear_model import ElasticNet, Ridge

        p = self.params
        if p["l1_ratio"] == 0:
            estimator = Ridge(alpha=p["alpha"], fit_intercept=p["fit_intercept"])
        else:
            estimator = ElasticNet(
                alpha=p["alpha"],
                l1_ratio=p["l1_ratio"],
                fit_intercept=p["fit_intercept"],
                max_iter=p["max_iter"],
                random_state=self.seed,
            )
        self._keep(estimator.fit(train.X, y, sample_weight=sample_weight))

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._linear(rows.X)[:, 0]


class LogisticModel(_Coefficients):
    """L2 (l1_ratio = 0, lbfgs) or elastic-net (saga) logistic regression; multinomial for K > 2."""

    name = "logistic"
    family = "linear"
    tasks = ("classification",)
    defaults = {"C": 1.0, "l1_ratio": 0.0, "max_iter": 1000, "class_weight": "none"}
    limits = {"C": above(0), "l1_ratio": between(0, 1), "max_iter": at_least(1), "class_weight": _CLASS_WEIGHTS}

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        from sklearn.linear_model import LogisticRegression

        p = self.params
        estimator = LogisticRegression(
            C=p["C"],
            l1_ratio=p["l1_ratio"],
            max_iter=p["max_iter"],
            solver="lbfgs" if p["l1_ratio"] == 0 else "saga",
            class_weight=_class_weight(p["class_weight"]),
            random_state=self.seed,
        )
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


def _sklearn_errors() -> tuple[type[BaseException], ...]:
    from sklearn.utils._param_validation import InvalidParameterError

    return (InvalidParameterError,)


class _Pickled(Model):
    def _library_errors(self):
        return _sklearn_errors()

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
    defaults = {
        "n_estimators": 300,
        "max_depth": 0,
        "min_samples_leaf": 50,
        "max_features": 0.5,
        "bootstrap": True,
        "max_samples": 1.0,
        "class_weight": "none",
    }
    # max_features is a share of the features: an integer 1 is read as 1.0 (all of them), not as a count.
    limits = {
        "n_estimators": at_least(1),
        "max_depth": at_least(0, note="0: no limit"),
        "min_samples_leaf": at_least(1),
        "max_features": fraction(choices=("sqrt", "log2")),
        "max_samples": fraction(),
        "class_weight": _CLASS_WEIGHTS,
    }

    def _check_params(self) -> None:
        if not self.is_classifier and self.params["class_weight"] != "none":
            raise ModelError(
                f"model.params.class_weight applies to classification only; '{self.name}' is a regression model here"
            )

    def _estimator_kwargs(self) -> dict[str, Any]:
        p = self.params
        kwargs = {
            "n_estimators": p["n_estimators"],
            "max_depth": p["max_depth"] or None,
            "min_samples_leaf": p["min_samples_leaf"],
            "max_features": p["max_features"],
            "bootstrap": p["bootstrap"],
            "n_jobs": self._n_jobs(),
            "random_state": self.seed,
        }
        if p["bootstrap"]:  # sklearn refuses max_samples without bootstrap
            kwargs["max_samples"] = p["max_samples"]
        if self.is_classifier:
            kwargs["class_weight"] = _class_weight(p["class_weight"])
        return kwargs

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.estimator_ = self._sklearn_class()(**self._estimator_kwargs()).fit(train.X, y, sample_weight=sample_weight)

    def _predict(self, rows: Inputs) -> np.ndarray:
        """Rows in parallel chunks, trees summed in order within each: bit-identical at any thread count.

        sklearn's own parallel predict adds the trees in whatever order the threads finish, which
        changes the last bits of a prediction from one call to the next.
        """
        from joblib import Parallel, delayed

        self.estimator_.set_params(n_jobs=1)  # a model loaded from an older run may still say -1
        method = self.estimator_.predict_proba if self.is_classifier else self.estimator_.predict
        chunks = np.array_split(np.arange(len(rows.X)), max(1, min(_cpus(self.threads), len(rows.X) // _CHUNK_ROWS)))
        if len(chunks) == 1:
            return method(rows.X)
        parts = Parallel(n_jobs=len(chunks), prefer="threads")(delayed(method)(rows.X[c]) for c in chunks)
        return np.concatenate(parts)

    def feature_importance(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.input_names_, self.estimator_.feature_importances_)}


_CHUNK_ROWS = 10_000  # below this many rows per thread, one thread is faster


def _cpus(threads: int) -> int:
    return threads if threads > 0 else os.cpu_count() or 1


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
    defaults = {
        "kernel": "rbf",
        "C": 1.0,
        "gamma": "scale",
        "epsilon": 0.1,
        "max_train_rows": 20000,
        "calibration_folds": 3,
    }
    limits = {
        "kernel": choice("rbf", "linear", "poly", "sigmoid"),
        "C": above(0),
        "gamma": Limit(kind="float", low=0, low_open=True, choices=("scale", "auto")),
        "epsilon": at_least(0),
        "max_train_rows": at_least(2),
        "calibration_folds": at_least(2),
    }

    def _subsample(self, n: int) -> np.ndarray:
        limit = int(self.params["max_train_rows"])
        if n <= limit:
            return np.arange(n)
        notice_once(
            f"svm:rows:{n}",
            f"svm trains on {limit:,} of {n:,} rows (model.params.max_train_rows); kernel SVMs scale as n²",
            self.reporter,
        )
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
