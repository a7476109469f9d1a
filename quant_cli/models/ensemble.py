"""Ensembles over registered models: voting, stacking, blending.

Members are given as specs, never as code: `{"name": "lightgbm", "params": {...}}`, optionally
with their own `"symbol_encoding"` (default: the ensemble's). Every member sees the same rows, so
member predictions line up row by row — which is alignment on (symbol, ts); `align_predictions`
joins per-member prediction tables on (symbol, ts) where rows can differ.

Mixed ensembles (tabular + sequence members). With a sequence member the ensemble takes
`PanelRows` (quant_cli.stages.fitting): sequence members read windows from the panel, tabular
members the rows' own features (`PanelRows.matrix()`), so every member scores the same
(symbol, ts) rows. Rows a member cannot score (a sequence member's warm-up: no full window) are
NOT scored by the ensemble — the inner join of `align_predictions`: voting gives NaN there, the
stacking and blending meta-models are fit only on rows every member scored and give NaN
elsewhere, and the train stage leaves NaN rows out of predictions.parquet. Averaging the members
that did score would silently change the model row by row; a warm-up is short (seq_len - 1 rows
per symbol) and at the start of the data, so dropping it costs little.

- voting:   weighted mean of member predictions (of class probabilities for classifiers).
- stacking: a meta-model fit on out-of-fold member scores from a purged k-fold over the training
            rows (needs ts and t1), never on in-sample predictions; members are then refit on all
            training rows for prediction.
- blending: members fit on the training rows, the meta-model on their scores for held-out rows:
            the validation rows, or (with none, e.g. inside a cross-validation fold) the last
            chronological share of the training rows — see `BlendingModel`.

Devices: the ensemble hands its device to every member; a member that cannot use it says so
itself. The ensemble's recorded device is the one its members actually used ("cuda:0" if any
member trained there, else "cpu"); `fit_info()["members"]` keeps each member's own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.errors import ModelError, one_of
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.device import notice_once
from quant_cli.models.encoding import KINDS
from quant_cli.models.panel import PanelRows
from quant_cli.models.params import Limit, at_least, between
from quant_cli.models.registry import create_model, load_model
from quant_cli.splits.stacking import label_horizon, purged_holdout, purged_kfold_indices

_MEMBERS = Limit(note='member tables, e.g. [{name = "lightgbm"}, {name = "linear", params = {alpha = 2.0}}]')
_META = Limit(note='{name = "...", params = {...}}; {}: linear, or logistic for classification')

_MEMBER_KEYS = ("name", "params", "symbol_encoding")


def align_predictions(frames: dict[str, pl.DataFrame], keys: tuple[str, ...] = ("symbol", "ts")) -> pl.DataFrame:
    """Join each member's `score` column on `keys` (inner): one row per key, one column per member."""
    out = None
    for label, frame in frames.items():
        part = frame.select(*keys, pl.col("score").alias(label))
        out = part if out is None else out.join(part, on=list(keys), how="inner")
    if out is None:
        raise ModelError("align_predictions needs at least one member's predictions")
    return out.sort(list(keys))


class _Ensemble(Model):
    family = "ensemble"
    tasks = TASKS
    sample_weights = True
    symbol_encodings = KINDS  # handed to members; the ensemble itself encodes nothing
    uses_meta = False

    def _encoder_kind(self) -> str:
        return "none"

    def _accepts_missing(self) -> bool:
        return True  # each member checks its own inputs

    def _usable_device(self, resolved: str) -> str:
        return resolved  # members decide, and a member that cannot use the device says so

    def fit(self, *args: Any, **kwargs: Any) -> Model:
        super().fit(*args, **kwargs)
        self.device_ = self._devices_used()
        return self

    def _fitted_models(self) -> list[Model]:
        return [*self.members_, *([self.meta_] if self.uses_meta else [])]

    def _devices_used(self) -> str:
        """The first non-CPU device a member or the meta-model trained on, else "cpu"."""
        used = [m.device_ for m in self._fitted_models() if m.device_ != "cpu"]
        return used[0] if used else "cpu"

    def uses_panel(self) -> bool:
        return self.panel_members_

    def needs_bars(self) -> bool:
        return self.bar_members_

    def _member_X(self, member: Model, X: Any) -> Any:
        """What `member` reads of the ensemble's rows: the panel rows, or their own features."""
        return X.matrix() if isinstance(X, PanelRows) and not member.uses_panel() else X

    def _check_params(self) -> None:
        members = self.params["members"]
        if not isinstance(members, list) or not members:
            raise ModelError(
                f"model.params.members: expected a list of at least one member, e.g. "
                f'[{{name = "lightgbm"}}, {{name = "linear"}}], for model \'{self.name}\', got {members!r}'
            )
        self.member_specs = [self._spec(i, m) for i, m in enumerate(members)]
        # constructing validates name, params and encoding now, not after hours
        members = [self._member(i, spec) for i, spec in enumerate(self.member_specs)]
        self.panel_members_ = any(m.uses_panel() for m in members)
        self.bar_members_ = any(m.needs_bars() for m in members)
        if self.uses_meta:
            self._meta()

    def _spec(self, i: int, spec: Any) -> dict[str, Any]:
        where = f"model.params.members[{i}]"
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ModelError(f'{where} must be a table with a model name, e.g. {{name = "lightgbm"}}, got {spec!r}')
        unknown = sorted(set(spec) - set(_MEMBER_KEYS))
        if unknown:
            raise ModelError(f"{where}.{unknown[0]} is not a member key; allowed: {one_of(_MEMBER_KEYS)}")
        if not isinstance(spec.get("params", {}), dict):
            raise ModelError(f"{where}.params must be a table of the member's parameters, got {spec['params']!r}")
        return {"params": {}, "symbol_encoding": self.symbol_encoding, **spec}

    def _create(self, where: str, name: str, params: dict, task: str, encoding: str, unseen: str) -> Model:
        try:
            return create_model(
                name,
                task,
                params,
                self.seed,
                self.threads,
                device=self.device,
                symbol_encoding=encoding,
                unseen_symbols=unseen,
                reporter=self.reporter,
                train=self.train_settings,
            )
        except ModelError as exc:
            raise ModelError(f"{where} ({name}): {exc}") from None

    def _member(self, i: int, spec: dict[str, Any], unseen: str | None = None) -> Model:
        return self._create(
            f"model.params.members[{i}]",
            spec["name"],
            spec["params"],
            self.task,
            spec["symbol_encoding"],
            unseen or self.unseen_symbols,
        )

    def _meta(self) -> Model:
        spec = self.params["meta"] or {"name": "logistic" if self.is_classifier else "linear"}
        if (
            not isinstance(spec, dict)
            or "name" not in spec
            or set(spec) - {"name", "params"}
            or not isinstance(spec.get("params", {}), dict)
        ):
            raise ModelError(
                f'model.params.meta: expected a table {{name = "...", params = {{...}}}} '
                f"for model '{self.name}', got {spec!r}"
            )
        return self._create("model.params.meta", spec["name"], spec.get("params", {}), self.task, "none", "error")

    # ---- fitting and scoring members ---------------------------------------------------------------

    def _labels(self, y: np.ndarray) -> np.ndarray:
        """Members learn the original labels (e.g. -1/0/1), not the 0..K-1 codes the base hands us."""
        return self.classes_[y] if self.is_classifier else y

    def _fit_member(
        self,
        i: int,
        rows: Inputs,
        y: np.ndarray,
        val: Inputs | None,
        y_val: np.ndarray | None,
        weight: np.ndarray | None,
        early_stopping: int,
        unseen: str | None = None,
    ) -> Model:
        member = self._member(i, self.member_specs[i], unseen)
        if weight is not None and not member.sample_weights:
            notice_once(
                f"weights:{member.name}", f"ensemble member '{member.name}' ignores sample weights", self.reporter
            )
            weight = None
        has_val = val is not None
        return member.fit(
            self._member_X(member, rows.X),
            self._labels(y),
            feature_names=self.input_names_,
            sample_weight=weight,
            X_val=self._member_X(member, val.X) if has_val else None,
            y_val=self._labels(y_val) if has_val else None,
            symbols=rows.symbols,
            symbols_val=val.symbols if has_val else None,
            early_stopping=early_stopping if has_val else 0,
            ts=rows.ts,
            t1=rows.t1,
        )

    def _fit_members(self, rows, y, val, y_val, weight, early_stopping) -> list[Model]:
        return [self._fit_member(i, rows, y, val, y_val, weight, early_stopping) for i in range(len(self.member_specs))]

    def _scores(self, members: list[Model], rows: Inputs) -> np.ndarray:
        """(n, M) member scores: the meta-model's inputs (NaN where a member cannot score a row)."""
        return np.column_stack([m.predict(self._member_X(m, rows.X), symbols=rows.symbols) for m in members])

    def _meta_names(self) -> list[str]:
        return [f"{i}:{spec['name']}" for i, spec in enumerate(self.member_specs)]

    def _fit_meta(
        self,
        Z: np.ndarray,
        y: np.ndarray,
        Z_val: np.ndarray | None,
        y_val: np.ndarray | None,
        weight: np.ndarray | None,
        early_stopping: int,
    ) -> Model:
        meta = self._meta()
        scored = np.isfinite(Z).all(axis=1)  # only rows every member scored (see the module notes)
        Z, y, weight = Z[scored], y[scored], None if weight is None else weight[scored]
        if Z_val is not None:
            scored_val = np.isfinite(Z_val).all(axis=1)
            Z_val, y_val = Z_val[scored_val], y_val[scored_val]
        has_val = Z_val is not None and len(Z_val)
        return meta.fit(
            Z,
            self._labels(y),
            feature_names=self._meta_names(),
            sample_weight=weight if meta.sample_weights else None,
            X_val=Z_val if has_val else None,
            y_val=self._labels(y_val) if has_val else None,
            early_stopping=early_stopping if has_val else 0,
        )

    def _predict_meta(self, rows: Inputs) -> np.ndarray:
        Z = self._scores(self.members_, rows)
        scored = np.isfinite(Z).all(axis=1)
        if not self.is_classifier:
            out = np.full(len(Z), np.nan)
            out[scored] = self.meta_.predict(Z[scored])
            return out
        # A blending meta-model may have seen fewer classes (validation rows only): place its columns.
        proba = np.full((len(Z), self.n_classes), np.nan)
        proba[scored] = 0.0
        proba[np.ix_(scored, np.searchsorted(self.classes_, self.meta_.classes_))] = self.meta_.predict_proba(Z[scored])
        return proba

    # ---- persistence ---------------------------------------------------------------------------------

    def _save_native(self, folder: Path) -> None:
        for i, member in enumerate(self.members_):
            member.save(folder / "members" / str(i))
        if self.uses_meta:
            self.meta_.save(folder / "meta")

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        self.members_ = [load_model(folder / "members" / str(i)) for i in range(len(self.member_specs))]
        if self.uses_meta:
            self.meta_ = load_model(folder / "meta")

    def _fit_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"members": [{"name": m.name, **m.fit_info()} for m in self.members_]}
        if self.uses_meta:
            info["meta"] = {"name": self.meta_.name, **self.meta_.fit_info()}
        return info


def _is_weight(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


class VotingModel(_Ensemble):
    name = "voting"
    defaults = {"members": [], "weights": []}
    limits = {"members": _MEMBERS, "weights": Limit(note="one number >= 0 per member; []: equal weights")}

    def _check_params(self) -> None:
        super()._check_params()
        weights = self.params["weights"] or [1.0] * len(self.member_specs)
        if len(weights) != len(self.member_specs) or not all(_is_weight(w) for w in weights) or sum(weights) <= 0:
            raise ModelError(
                f"model.params.weights: expected {len(self.member_specs)} numbers >= 0 with a positive sum "
                f"(one per member) for model '{self.name}', got {self.params['weights']!r}"
            )
        self.weights = np.asarray(weights, dtype=np.float64) / float(sum(weights))

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.members_ = self._fit_members(train, y, val, y_val, sample_weight, early_stopping)

    def _predict(self, rows: Inputs) -> np.ndarray:
        # Classifiers average probabilities (soft voting); the members share the ensemble's classes.
        outputs = [
            m.predict_proba(self._member_X(m, rows.X), symbols=rows.symbols)
            if self.is_classifier
            else m.predict(self._member_X(m, rows.X), symbols=rows.symbols)
            for m in self.members_
        ]
        return sum(w * out for w, out in zip(self.weights, outputs))

    def _fit_info(self) -> dict[str, Any]:
        return {**super()._fit_info(), "weights": self.weights.tolist()}


class StackingModel(_Ensemble):
    name = "stacking"
    uses_meta = True
    # embargo -1: the label horizon, inferred from ts and t1 (TOML has no null).
    defaults = {"members": [], "meta": {}, "folds": 5, "embargo": -1}
    limits = {
        "members": _MEMBERS,
        "meta": _META,
        "folds": at_least(2),
        "embargo": at_least(0, special=(-1,), note="-1: the label horizon"),
    }

    def _folds(self, train: Inputs) -> list[tuple[np.ndarray, np.ndarray]]:
        if train.ts is None or train.t1 is None:
            raise ModelError(
                "model 'stacking' needs each training row's ts and label end time t1 (fit(..., ts=, t1=)) "
                "to build purged out-of-fold predictions"
            )
        embargo = self.params["embargo"] if self.params["embargo"] >= 0 else label_horizon(train.ts, train.t1)
        folds = purged_kfold_indices(train.ts, train.t1, self.params["folds"], embargo)
        if any(len(tr) == 0 for tr, _ in folds):
            raise ModelError("a stacking fold has no training rows left after purging; use fewer folds or more data")
        return folds

    def out_of_fold(self, train: Inputs, y: np.ndarray, val, y_val, weight, early_stopping) -> np.ndarray:
        """(n, M) member scores where row r's score comes from members that never trained on r."""
        oof = np.full((len(y), len(self.member_specs)), np.nan)
        for fit_rows, test_rows in self._folds(train):
            w = None if weight is None else weight[fit_rows]
            test = train.take(test_rows)
            for j in range(len(self.member_specs)):
                # A symbol listed only inside the test block is unseen by this fold's member: score
                # it neutrally, as a new listing would be scored live, rather than abort the fit.
                member = self._fit_member(
                    j, train.take(fit_rows), y[fit_rows], val, y_val, w, early_stopping, unseen="neutral"
                )
                oof[test_rows, j] = member.predict(self._member_X(member, test.X), symbols=test.symbols)
        return oof

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.oof_ = self.out_of_fold(train, y, val, y_val, sample_weight, early_stopping)
        self.members_ = self._fit_members(train, y, val, y_val, sample_weight, early_stopping)
        Z_val = self._scores(self.members_, val) if val is not None else None
        self.meta_ = self._fit_meta(self.oof_, y, Z_val, y_val, sample_weight, early_stopping)

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._predict_meta(rows)

    def _fit_info(self) -> dict[str, Any]:
        return {**super()._fit_info(), "folds": self.params["folds"]}


class BlendingModel(_Ensemble):
    """Members fit on the training rows; the meta-model on their scores for rows they never saw.

    Those rows are the validation rows when the fit has some (a chronological split). Without
    them — inside a cross-validation fold, or a split with `val = 0` — blending holds out the last
    `holdout` share (default 0.2) of the training rows' distinct timestamps: the latest rows, so
    the meta-model learns how members score rows after the ones they trained on, as they will be
    used. Members then train only on rows whose label ends (t1) before the holdout's first
    timestamp, so no member-training label overlaps a holdout row (the same purge as the CV folds;
    it needs ts and t1). Members are not refit on the holdout: the meta-model's weights belong to
    the members it scored. Members never early-stop: the held-out rows are the meta-model's data.

    Metrics on the validation rows are therefore in-sample for the meta-model when it was fit on
    them: `fit_info()["val_in_sample"]` says so (True), so reports can flag the validation IC;
    it is False when the meta-model was fit on a holdout of the training rows.
    """

    name = "blending"
    uses_meta = True
    defaults = {"members": [], "meta": {}, "holdout": 0.2}
    limits = {"members": _MEMBERS, "meta": _META, "holdout": between(0, 1, low_open=True, high_open=True)}

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.__dict__.pop("holdout_rows_", None)
        self.val_in_sample_ = val is not None
        if val is None:
            fit_rows, held_rows = self._holdout(train)
            train, y, val, y_val = train.take(fit_rows), y[fit_rows], train.take(held_rows), y[held_rows]
            sample_weight = None if sample_weight is None else sample_weight[fit_rows]
            self.holdout_rows_ = len(held_rows)
        self.members_ = self._fit_members(train, y, None, None, sample_weight, 0)
        self.meta_ = self._fit_meta(self._scores(self.members_, val), y_val, None, None, None, 0)

    def _holdout(self, train: Inputs) -> tuple[np.ndarray, np.ndarray]:
        if train.ts is None or train.t1 is None:
            raise ModelError(
                "model 'blending' fits its meta-model on held-out rows: pass validation rows (X_val, y_val) "
                "or each training row's ts and t1 (fit(..., ts=, t1=)) to hold out the latest rows"
            )
        fit_rows, held_rows = purged_holdout(train.ts, train.t1, self.params["holdout"])
        if len(fit_rows) == 0:
            raise ModelError(
                f"model 'blending': no training rows are left for the members after holding out the last "
                f"{self.params['holdout']:g} of the rows and purging overlapping labels; use more data "
                "or a smaller model.params.holdout"
            )
        return fit_rows, held_rows

    def _fit_info(self) -> dict[str, Any]:
        held = getattr(self, "holdout_rows_", None)
        return {
            **super()._fit_info(),
            "val_in_sample": self.val_in_sample_,
            **({"holdout_rows": held} if held is not None else {}),
        }

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        super()._load_native(folder, meta)
        # A model saved before the flag existed: without a holdout, the meta-model saw the val rows.
        self.val_in_sample_ = bool(meta["fit_info"].get("val_in_sample", "holdout_rows" not in meta["fit_info"]))
        if "holdout_rows" in meta["fit_info"]:
            self.holdout_rows_ = meta["fit_info"]["holdout_rows"]

    def _predict(self, rows: Inputs) -> np.ndarray:
        return self._predict_meta(rows)
