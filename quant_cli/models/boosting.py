"""Gradient-boosted trees: LightGBM, CatBoost, XGBoost.

Each saves in its library's own non-pickle format (LightGBM text, CatBoost .cbm, XGBoost JSON),
stops early on the validation rows, takes sample weights, accepts missing features, and reads
the `index` symbol encoding as a categorical feature (never as an ordered number). GPU options
are used only when the resolved device is CUDA; a saved model always predicts on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quant_cli.errors import ModelError, one_of
from quant_cli.io import write_bytes_atomic, write_text_atomic
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.device import cuda_index, is_cuda, notice_once
from quant_cli.models.params import Limit, above, at_least, between, fraction


class _Boosting(Model):
    family = "boosting"
    tasks = TASKS
    sample_weights = True
    gpu = True
    early_stopping = True
    importance = True
    missing_values = True
    symbol_encodings = ("none", "one_hot", "index")
    objective_key = "objective"
    classification_objectives: tuple[str, ...] = ()

    def _check_params(self) -> None:
        objective = self.params[self.objective_key]
        allowed = ("auto", *self.classification_objectives)
        if self.is_classifier and objective not in allowed:
            raise ModelError(
                f"model.params.{self.objective_key} {objective!r} does not fit model.task 'classification'; "
                f"allowed: {one_of(allowed)}"
            )
        if not self.is_classifier and objective in self.classification_objectives:
            raise ModelError(
                f"model.params.{self.objective_key} {objective!r} is a classification objective; "
                "set model.task = 'classification' or use a regression objective"
            )

    def _importance(self, values: np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.input_names_, values)}

    def _as_proba(self, raw: np.ndarray) -> np.ndarray:
        """Binary libraries return p(class 1) only; give every classifier (n, K) columns."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.is_classifier and raw.ndim == 1:
            return np.column_stack([1.0 - raw, raw])
        return raw


# ---- LightGBM ------------------------------------------------------------------------------------

_LGB_FIXED = {"verbosity": -1, "deterministic": True, "force_col_wise": True}

# LightGBM's objectives for tabular rows (canonical names). Checked before fitting: LightGBM writes
# '[LightGBM] [Fatal] ...' straight to the process's stderr before it raises.
_LGB_OBJECTIVES = (
    "auto",
    "regression",
    "regression_l1",
    "huber",
    "fair",
    "poisson",
    "quantile",
    "mape",
    "gamma",
    "tweedie",
    "cross_entropy",
    "binary",
    "multiclass",
    "multiclassova",
)


class LightGBMModel(_Boosting):
    name = "lightgbm"
    float32_inputs = True  # LightGBM bins float32 directly: half the memory of a float64 copy
    classification_objectives = ("binary", "multiclass", "multiclassova")
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
        "objective": "auto",
    }
    limits = {
        "n_estimators": at_least(1),
        "learning_rate": above(0),
        "num_leaves": at_least(2),
        "max_depth": at_least(1, special=(-1,), note="-1: no limit"),
        "min_data_in_leaf": at_least(0),
        "feature_fraction": fraction(),
        "bagging_fraction": fraction(),
        "bagging_freq": at_least(0),
        "lambda_l1": at_least(0),
        "lambda_l2": at_least(0),
        "objective": Limit(choices=_LGB_OBJECTIVES, note="'auto': by model.task"),
    }

    def _library_errors(self):
        import lightgbm as lgb

        return (lgb.basic.LightGBMError,)

    def _lgb_params(self, device: str) -> dict[str, Any]:
        params = {k: v for k, v in self.params.items() if k not in ("n_estimators", "objective")}
        params.update(_LGB_FIXED, seed=self.seed, num_threads=self.threads, **self._objective())
        if is_cuda(device):
            # The PyPI wheel's GPU learner is OpenCL ("gpu"); "cuda" needs a source build.
            params.update(device_type="gpu", gpu_device_id=cuda_index(device))
        return params

    def _objective(self) -> dict[str, Any]:
        objective = self.params["objective"]
        if objective != "auto":
            return {"objective": objective, **({"num_class": self.n_classes} if objective.startswith("multi") else {})}
        if not self.is_classifier:
            return {"objective": "regression"}
        return (
            {"objective": "binary"} if self.n_classes == 2 else {"objective": "multiclass", "num_class": self.n_classes}
        )

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        import lightgbm as lgb

        data = lgb.Dataset(
            train.X,
            y,
            weight=sample_weight,
            feature_name=list(self.input_names_),
            categorical_feature=self.categorical_columns or "auto",
            free_raw_data=False,
        )
        valid_sets, callbacks = [], []
        if val is not None and early_stopping:
            valid_sets = [lgb.Dataset(val.X, y_val, reference=data)]
            callbacks = [lgb.early_stopping(early_stopping, verbose=False)]
        if self._report is not None and val is not None:
            callbacks.append(self._round_report(val))
        try:
            booster = lgb.train(
                self._lgb_params(self.device_),
                data,
                num_boost_round=self.params["n_estimators"],
                valid_sets=valid_sets,
                callbacks=callbacks,
            )
        except lgb.basic.LightGBMError as exc:
            if not is_cuda(self.device_):
                raise
            notice_once(
                "lightgbm:gpu",
                f"LightGBM cannot use the GPU ({str(exc).splitlines()[0]}); training on CPU",
                self.reporter,
            )
            self.device_ = "cpu"
            booster = lgb.train(
                self._lgb_params("cpu"),
                data,
                num_boost_round=self.params["n_estimators"],
                valid_sets=valid_sets,
                callbacks=callbacks,
            )
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.booster_ = booster

    def _round_report(self, val: Inputs) -> Any:
        """A LightGBM callback handing each round and the current val scores to the StepReport."""
        report = self._report

        def callback(env: Any) -> None:
            rounds = env.iteration + 1
            report(rounds, lambda: self._scores(self._as_proba(env.model.predict(val.X, num_iteration=rounds))))

        callback.order = 40  # after early stopping's bookkeeping (order 30)
        return callback

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._as_proba(self.booster_.predict(rows.X, num_iteration=self.best_iteration_))

    def feature_importance(self) -> dict[str, float]:
        return self._importance(
            self.booster_.feature_importance(importance_type="gain", iteration=self.best_iteration_)
        )

    def _fit_info(self) -> dict[str, Any]:
        return {"best_iteration": self.best_iteration_}

    def _save_native(self, folder: Path) -> None:
        # The same text as save_model, written by qfactory: a full disk is then one StorageError line naming the
        # file (LightGBM's own writer raises "Cannot write binary data ..." and prints a [Fatal] line).
        write_text_atomic(folder / "model.txt", self.booster_.model_to_string(num_iteration=self.best_iteration_))

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_file=str(folder / "model.txt"))
        self.best_iteration_ = int(meta["fit_info"]["best_iteration"])


# ---- CatBoost ------------------------------------------------------------------------------------


class CatBoostModel(_Boosting):
    name = "catboost"
    objective_key = "loss_function"
    classification_objectives = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
    defaults = {
        "iterations": 500,
        "learning_rate": 0.05,
        "depth": 6,
        "l2_leaf_reg": 3.0,
        "border_count": 254,
        "random_strength": 1.0,
        "loss_function": "auto",
    }
    limits = {
        "iterations": at_least(1),
        "learning_rate": above(0),
        "depth": between(1, 16),
        "l2_leaf_reg": at_least(0),
        "border_count": between(1, 65535),
        "random_strength": at_least(0),
        "loss_function": Limit(note="'auto': by model.task, or a CatBoost loss function"),
    }

    def _library_errors(self):
        import catboost as cb

        return (cb.CatBoostError,)

    def _cb_params(self) -> dict[str, Any]:
        params = {
            **self.params,
            "loss_function": self._loss(),
            "random_seed": self.seed,
            "thread_count": self._n_jobs(),
            "allow_writing_files": False,
            "verbose": False,
        }
        if is_cuda(self.device_):
            params.update(task_type="GPU", devices=str(cuda_index(self.device_)))
        return params

    def _loss(self) -> str:
        loss = self.params["loss_function"]
        if loss != "auto":
            return loss
        if not self.is_classifier:
            return "RMSE"
        return "Logloss" if self.n_classes == 2 else "MultiClass"

    def _pool(self, rows: Inputs, y=None, weight=None):
        """CatBoost takes categories as strings, beside the numeric block (FeaturesData)."""
        import catboost as cb

        if not self.categorical_columns:
            return cb.Pool(rows.X, label=y, weight=weight)
        index = rows.X[:, -1]
        cats = np.where(np.isnan(index), "unseen", np.nan_to_num(index, nan=-1).astype(np.int64).astype(str))
        data = cb.FeaturesData(
            num_feature_data=np.ascontiguousarray(rows.X[:, :-1], dtype=np.float32),
            cat_feature_data=cats.astype(object)[:, None],
        )
        return cb.Pool(data, label=y, weight=weight)

    def _estimator(self, **params):
        import catboost as cb

        return cb.CatBoostClassifier(**params) if self.is_classifier else cb.CatBoostRegressor(**params)

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        model = self._estimator(**self._cb_params())
        stop = val is not None and early_stopping > 0
        model.fit(
            self._pool(train, y, sample_weight),
            eval_set=self._pool(val, y_val) if stop else None,
            early_stopping_rounds=early_stopping if stop else None,
            use_best_model=stop,
        )
        self.model_ = model
        self.best_iteration_ = int(model.tree_count_)

    def _predict(self, rows: Inputs) -> np.ndarray:
        pool = self._pool(rows)
        return self.model_.predict_proba(pool) if self.is_classifier else self.model_.predict(pool)

    def feature_importance(self) -> dict[str, float]:
        return self._importance(self.model_.get_feature_importance())

    def _fit_info(self) -> dict[str, Any]:
        return {"best_iteration": self.best_iteration_}

    def _save_native(self, folder: Path) -> None:
        self.model_.save_model(str(folder / "model.cbm"))

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        self.model_ = self._estimator().load_model(str(folder / "model.cbm"))
        self.best_iteration_ = int(meta["fit_info"]["best_iteration"])


# ---- XGBoost -------------------------------------------------------------------------------------


class XGBoostModel(_Boosting):
    name = "xgboost"
    classification_objectives = ("binary:logistic", "multi:softprob")
    defaults = {
        "n_estimators": 500,
        "learning_rate": 0.05,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "reg_alpha": 0.0,
        "gamma": 0.0,
        "max_bin": 256,
        "objective": "auto",
    }
    limits = {
        "n_estimators": at_least(1),
        "learning_rate": above(0),
        "max_depth": at_least(0, note="0: no limit"),
        "min_child_weight": at_least(0),
        "subsample": fraction(),
        "colsample_bytree": fraction(),
        "reg_lambda": at_least(0),
        "reg_alpha": at_least(0),
        "gamma": at_least(0),
        "max_bin": at_least(2),
        "objective": Limit(note="'auto': by model.task, or an XGBoost objective"),
    }

    def _library_errors(self):
        import xgboost as xgb

        return (xgb.core.XGBoostError,)

    def _xgb_params(self) -> dict[str, Any]:
        p = self.params
        params = {
            "eta": p["learning_rate"],
            "max_depth": p["max_depth"],
            "min_child_weight": p["min_child_weight"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "lambda": p["reg_lambda"],
            "alpha": p["reg_alpha"],
            "gamma": p["gamma"],
            "max_bin": p["max_bin"],
            "tree_method": "hist",
            "seed": self.seed,
            "nthread": self.threads,
            "verbosity": 0,
            "device": self.device_,
        }
        return {**params, **self._objective()}

    def _objective(self) -> dict[str, Any]:
        objective = self.params["objective"]
        if objective == "auto":
            objective = (
                "multi:softprob"
                if self.n_classes > 2
                else "binary:logistic"
                if self.is_classifier
                else "reg:squarederror"
            )
        return {"objective": objective, **({"num_class": self.n_classes} if objective.startswith("multi") else {})}

    def _matrix(self, rows: Inputs, y=None, weight=None):
        import xgboost as xgb

        # Names stay f0..fN inside XGBoost (it rejects some characters); we map them back ourselves.
        types = ["q"] * rows.X.shape[1]
        for column in self.categorical_columns:
            types[column] = "c"
        return xgb.DMatrix(
            rows.X,
            label=y,
            weight=weight,
            missing=np.nan,
            feature_types=types,
            enable_categorical=bool(self.categorical_columns),
            nthread=self.threads or -1,
        )

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        import xgboost as xgb

        stop = val is not None and early_stopping > 0
        evals = [(self._matrix(val, y_val), "val")] if stop else []
        callbacks = [self._round_report(val)] if self._report is not None and val is not None else None
        booster = xgb.train(
            self._xgb_params(),
            self._matrix(train, y, sample_weight),
            num_boost_round=self.params["n_estimators"],
            evals=evals,
            early_stopping_rounds=early_stopping if stop else None,
            verbose_eval=False,
            callbacks=callbacks,
        )
        self.n_trees_ = int(booster.best_iteration + 1) if stop else int(booster.num_boosted_rounds())
        self.booster_ = booster

    def _round_report(self, val: Inputs) -> Any:
        """An XGBoost callback handing each round and the current val scores to the StepReport."""
        import xgboost as xgb

        report, matrix, model = self._report, self._matrix(val), self

        class RoundReport(xgb.callback.TrainingCallback):
            def after_iteration(self, booster: Any, epoch: int, evals_log: Any) -> bool:
                rounds = epoch + 1
                report(
                    rounds, lambda: model._scores(model._as_proba(booster.predict(matrix, iteration_range=(0, rounds))))
                )
                return False

        return RoundReport()

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._as_proba(self.booster_.predict(self._matrix(rows), iteration_range=(0, self.n_trees_)))

    def feature_importance(self) -> dict[str, float]:
        gains = self.booster_.get_score(importance_type="total_gain")
        return self._importance(np.array([gains.get(f"f{i}", 0.0) for i in range(len(self.input_names_))]))

    def _fit_info(self) -> dict[str, Any]:
        return {"best_iteration": self.n_trees_}

    def _save_native(self, folder: Path) -> None:
        write_bytes_atomic(folder / "xgboost.json", bytes(self.booster_.save_raw(raw_format="json")))  # = save_model

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        import xgboost as xgb

        self.booster_ = xgb.Booster(model_file=str(folder / "xgboost.json"))
        self.booster_.set_param({"device": "cpu", "nthread": self.threads})
        self.n_trees_ = int(meta["fit_info"]["best_iteration"])
