"""Ensembles: purged out-of-fold stacking (never in-sample), voting weights, blending on validation
rows, member validation, and alignment on (symbol, ts)."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import TORCH_FAST, TRAIN_FAST, model_panel

from quant_cli.cli import app
from quant_cli.errors import ModelError
from quant_cli.io import read_json
from quant_cli.models import device as device_mod
from quant_cli.models.base import REGISTERED, Model
from quant_cli.models.ensemble import align_predictions
from quant_cli.models.registry import create_model, load_model
from quant_cli.report import CollectingReporter
from quant_cli.splits.stacking import label_horizon, purged_holdout, purged_kfold_indices

FEATURES = ["f0", "f1", "f2"]
FAST_LGB = {"n_estimators": 30, "min_data_in_leaf": 10}


class Memorizer(Model, register=False):
    """Returns a training row's own label, 0 for any row it did not train on.

    In-sample its predictions are perfect; stacked in-sample it would hand the meta-model the
    label itself. So its out-of-fold column must be all zeros."""

    name = "memorizer"
    family = "test"
    tasks = ("regression",)
    sample_weights = True

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        self.table_ = {row.tobytes(): label for row, label in zip(train.X, y)}

    def _predict(self, rows):
        return np.array([self.table_.get(row.tobytes(), 0.0) for row in rows.X])

    def _save_native(self, folder: Path) -> None:
        raise NotImplementedError

    def _load_native(self, folder: Path, meta) -> None:
        raise NotImplementedError


@pytest.fixture
def memorizer(monkeypatch):
    monkeypatch.setitem(REGISTERED, "memorizer", Memorizer)  # registered for this test only


# ---- purged folds --------------------------------------------------------------------------------


def test_purged_kfold_covers_every_row_once_and_never_overlaps_labels():
    _, _, ts, t1, _ = model_panel(horizon=3)
    folds = purged_kfold_indices(ts, t1, n_splits=5, embargo=2)
    tested = np.concatenate([test for _, test in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tested), np.arange(len(ts)))
    unique = np.unique(ts)
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0
        span_start, span_end = ts[test].min(), t1[test].max()
        # No training label interval [ts, t1] touches the test rows' [first ts, last t1].
        assert not ((ts[train] <= span_end) & (t1[train] >= span_start)).any()
        # Embargo: the 2 timestamps after the test block are not trained on.
        last = np.searchsorted(unique, ts[test].max())
        assert not np.isin(ts[train], unique[last + 1 : last + 3]).any()


def test_purged_kfold_keeps_rows_far_from_the_test_block():
    _, _, ts, t1, _ = model_panel(n_ts=50, horizon=1)
    train, test = purged_kfold_indices(ts, t1, n_splits=5, embargo=0)[2]  # timestamps 20..29 tested
    days = (ts - ts.min()) // np.timedelta64(1, "D")
    assert set(days[test]) == set(range(20, 30))
    assert set(days[train]) == set(range(0, 19)) | set(range(31, 50))  # 19 and 30 purged (1-bar labels)


def test_purged_kfold_rejects_bad_input():
    _, _, ts, t1, _ = model_panel(n_ts=4)
    with pytest.raises(ModelError, match="folds must be between 2 and the number of distinct timestamps"):
        purged_kfold_indices(ts, t1, n_splits=5)
    with pytest.raises(ModelError, match="t1 .* is before ts"):
        purged_kfold_indices(ts, ts - np.timedelta64(1, "D"), n_splits=2)


def test_unknown_label_end_is_purged_conservatively():
    _, _, ts, t1, _ = model_panel(n_ts=20, n_sym=1)
    t1 = t1.copy()
    t1[0] = np.datetime64("NaT")
    for train, _test in purged_kfold_indices(ts, t1, n_splits=4)[1:]:
        assert 0 not in train  # a row whose label end is unknown overlaps every later block


def test_label_horizon():
    _, _, ts, t1, _ = model_panel(horizon=3)
    assert label_horizon(ts, t1) == 3


# ---- stacking never sees in-sample predictions -------------------------------------------------------


def test_stacking_meta_model_trains_only_on_out_of_fold_predictions(memorizer):
    X, y, ts, t1, symbols = model_panel()
    stack = create_model(
        "stacking", "regression", {"members": [{"name": "memorizer"}, {"name": "linear"}], "folds": 4}, 1, 1
    )
    stack.fit(X, y, feature_names=FEATURES, ts=ts, t1=t1)
    # The memorizer is perfect in-sample: in-sample stacking would feed the meta-model y itself.
    np.testing.assert_array_equal(stack.members_[0].predict(X), y)
    # Its out-of-fold column — the meta-model's training input — never saw the row: all zeros.
    assert stack.oof_.shape == (len(y), 2) and np.isfinite(stack.oof_).all()
    np.testing.assert_array_equal(stack.oof_[:, 0], 0.0)
    # So the meta-model learned nothing from it, and relies on the honest member.
    coef = stack.meta_.coef_[0]
    assert coef[0] == 0.0 and coef[1] > 0.5


def test_stacking_oof_comes_from_fold_models(memorizer):
    """The linear member's OOF column equals refitting it on each purged fold by hand."""
    X, y, ts, t1, _ = model_panel()
    stack = create_model("stacking", "regression", {"members": ["linear"], "folds": 3, "embargo": 1}, 1, 1)
    stack.fit(X, y, feature_names=FEATURES, ts=ts, t1=t1)
    expected = np.empty(len(y))
    for train, test in purged_kfold_indices(ts, t1, 3, 1):
        fold_model = create_model("linear", "regression", {}, 1, 1).fit(X[train], y[train], feature_names=FEATURES)
        expected[test] = fold_model.predict(X[test])
    np.testing.assert_allclose(stack.oof_[:, 0], expected)


def test_stacking_with_a_symbol_listed_only_late_scores_it_neutrally_out_of_fold():
    X, y, ts, t1, symbols = model_panel()
    symbols = symbols.astype(object)
    symbols[-30:] = "LATE"  # a new listing: inside the last fold only, unseen by that fold's members
    stack = create_model("stacking", "regression", {"members": ["linear"], "folds": 3}, 1, 1, symbol_encoding="one_hot")
    stack.fit(X, y, feature_names=FEATURES, ts=ts, t1=t1, symbols=symbols)
    assert np.isfinite(stack.oof_).all()
    assert "LATE" in stack.members_[0].encoder_.symbols_  # the final members saw every training symbol
    with pytest.raises(ModelError, match="symbols not seen at training: 'NEW'"):
        stack.predict(X[:2], symbols=np.array(["A", "NEW"]))  # the configured policy still holds at prediction


def test_stacking_needs_ts_and_t1():
    X, y, *_ = model_panel()
    stack = create_model("stacking", "regression", {"members": ["linear"]}, 1, 1)
    with pytest.raises(ModelError, match=r"needs each training row's ts and label end time t1"):
        stack.fit(X, y, feature_names=FEATURES)


# ---- voting and blending -----------------------------------------------------------------------------


def test_voting_is_the_weighted_mean_of_members():
    X, y, ts, t1, _ = model_panel()
    specs = [{"name": "linear", "params": {"alpha": 1.0}}, {"name": "lightgbm", "params": FAST_LGB}]
    vote = create_model("voting", "regression", {"members": specs, "weights": [3, 1]}, 1, 1)
    vote.fit(X, y, feature_names=FEATURES)
    alone = [
        create_model(s["name"], "regression", s["params"], 1, 1).fit(X, y, feature_names=FEATURES).predict(X)
        for s in specs
    ]
    np.testing.assert_allclose(vote.predict(X), 0.75 * alone[0] + 0.25 * alone[1])


def test_voting_classifier_averages_probabilities():
    X, y, *_ = model_panel()
    y = np.sign(y)
    specs = [{"name": "logistic"}, {"name": "lightgbm", "params": FAST_LGB}]
    vote = create_model("voting", "classification", {"members": specs}, 1, 1).fit(X, y, feature_names=FEATURES)
    probas = [
        create_model(s["name"], "classification", s.get("params", {}), 1, 1)
        .fit(X, y, feature_names=FEATURES)
        .predict_proba(X)
        for s in specs
    ]
    np.testing.assert_allclose(vote.predict_proba(X), (probas[0] + probas[1]) / 2)


def test_blending_fits_the_meta_model_on_validation_rows(memorizer):
    X, y, *_ = model_panel()
    blend = create_model("blending", "regression", {"members": ["memorizer", "linear"]}, 1, 1)
    blend.fit(X[:200], y[:200], feature_names=FEATURES, X_val=X[200:], y_val=y[200:], early_stopping=10)
    # Members never trained on validation rows, so the memorizer scores them 0 and gets no weight.
    assert blend.meta_.coef_[0][0] == 0.0 and blend.meta_.coef_[0][1] > 0.5
    with pytest.raises(ModelError, match=r"pass validation rows \(X_val, y_val\) or each training row's ts and t1"):
        create_model("blending", "regression", {"members": ["linear"]}, 1, 1).fit(X, y, feature_names=FEATURES)


def test_members_carry_their_own_symbol_encoding():
    X, y, ts, t1, symbols = model_panel()
    specs = [
        {"name": "linear", "symbol_encoding": "one_hot"},
        {"name": "lightgbm", "params": FAST_LGB, "symbol_encoding": "index"},
    ]
    vote = create_model("voting", "regression", {"members": specs}, 1, 1, unseen_symbols="neutral")
    vote.fit(X, y, feature_names=FEATURES, symbols=symbols)
    assert [m.encoder_.kind for m in vote.members_] == ["one_hot", "index"]
    assert np.isfinite(vote.predict(X[:3], symbols=np.array(["A", "NEW", "C"]))).all()


# ---- validation of ensemble parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params,message",
    [
        ({"members": []}, r"model.params.members: expected a list of at least one member"),
        (
            {"members": [{"name": "lightgbn"}]},
            r"model.params.members\[0\] \(lightgbn\): model.name 'lightgbn' is not a "
            r"registered model \(did you mean 'lightgbm'\?\)",
        ),
        ({"members": [{"name": "linear", "parms": {}}]}, r"model.params.members\[0\].parms is not a member key"),
        (
            {"members": [{"name": "linear", "params": {"alpah": 1}}]},
            r"members\[0\] \(linear\): model.params.alpah is not a parameter of model "
            r"'linear' \(did you mean 'alpha'\?\)",
        ),
        ({"members": ["linear", "linear"], "weights": [1]}, r"model.params.weights: expected 2 numbers >= 0"),
    ],
)
def test_bad_ensemble_params_are_named(params, message):
    with pytest.raises(ModelError, match=message):
        create_model("voting", "regression", params, 1, 1)


def test_bad_meta_and_member_task_are_named():
    with pytest.raises(
        ModelError, match=r"model.params.members\[0\] \(linear\): model.task 'classification' is not supported"
    ):
        create_model("stacking", "classification", {"members": ["linear"]}, 1, 1)
    with pytest.raises(ModelError, match=r"model.params.meta \(ridge\): model.name 'ridge' is not a registered model"):
        create_model("stacking", "regression", {"members": ["linear"], "meta": {"name": "ridge"}}, 1, 1)
    with pytest.raises(ModelError, match=r"model.params.folds: expected an integer >= 2 for model 'stacking', got 1$"):
        create_model("stacking", "regression", {"members": ["linear"], "folds": 1}, 1, 1)


# ---- alignment on (symbol, ts) -------------------------------------------------------------------------


def test_align_predictions_joins_members_on_symbol_and_ts():
    ts = [dt.datetime(2021, 1, d, tzinfo=dt.timezone.utc) for d in (1, 2, 3)]
    a = pl.DataFrame({"symbol": ["X", "X", "Y"], "ts": ts, "score": [1.0, 2.0, 3.0]})
    b = pl.DataFrame({"symbol": ["Y", "X"], "ts": [ts[2], ts[1]], "score": [30.0, 20.0]})  # other order, one row fewer
    out = align_predictions({"a": a, "b": b})
    assert out.columns == ["symbol", "ts", "a", "b"]
    assert out.select("symbol", "a", "b").rows() == [("X", 2.0, 20.0), ("Y", 3.0, 30.0)]


def test_blending_says_its_validation_metrics_are_in_sample(tmp_path):
    """The meta-model is fit on the validation rows, so scores on them are in-sample: fit_info
    says so (and survives save/load); a blend fit on a training holdout says they are not."""
    X, y, ts, t1, _ = model_panel()
    on_val = create_model("blending", "regression", {"members": ["linear"]}, 1, 1)
    on_val.fit(X[:200], y[:200], feature_names=FEATURES, X_val=X[200:], y_val=y[200:])
    assert on_val.fit_info()["val_in_sample"] is True
    on_val.save(tmp_path / "a")
    assert load_model(tmp_path / "a").fit_info()["val_in_sample"] is True
    on_holdout = create_model("blending", "regression", {"members": ["linear"]}, 1, 1)
    on_holdout.fit(X, y, feature_names=FEATURES, ts=ts, t1=t1)
    assert on_holdout.fit_info()["val_in_sample"] is False
    on_holdout.save(tmp_path / "b")
    assert load_model(tmp_path / "b").fit_info()["val_in_sample"] is False


def test_a_blending_run_marks_its_validation_metrics_in_sample(runner, tmp_path):
    """metrics.json says so, so nobody reads the blend's val IC as out-of-sample."""
    from quant_cli.cli import app

    assert (
        runner.invoke(
            app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "4", "--bars", "300"]
        ).exit_code
        == 0
    )
    recipe = tmp_path / "blend.toml"
    recipe.write_text('[data]\ndataset = "d"\n[model]\nname = "blending"\n[model.params]\nmembers = ["linear"]\n')
    result = runner.invoke(app, ["train", "--recipe", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["val"]["in_sample"] is True and "in_sample" not in metrics["test"]


QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")


SMALL = ["--set", "data.synthetic.bars=300", "--set", "data.synthetic.symbols=5"]


PANEL_FEATURES = [f"f{i}" for i in range(4)]


FAST = {
    "lightgbm": {"n_estimators": 20, "min_data_in_leaf": 5},
    "catboost": {"iterations": 20, "depth": 3},
    "xgboost": {"n_estimators": 20, "max_depth": 3},
    "random_forest": {"n_estimators": 10, "min_samples_leaf": 5},
    "extra_trees": {"n_estimators": 10, "min_samples_leaf": 5},
    **TORCH_FAST,
}


PANEL = {"n_features": len(PANEL_FEATURES), "noise": 0.5}


def invoke(runner, args):
    result = runner.invoke(app, args)
    return result, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def quickstart_data(runner):
    result = runner.invoke(app, ["ingest", "--recipe", QUICKSTART, *SMALL, "-q"])
    assert result.exit_code == 0, result.output


def test_purged_holdout_is_the_latest_share_and_purged_by_label_end():
    _, _, ts, t1, _ = model_panel(n_ts=50, horizon=3, **PANEL)
    fit_rows, held_rows = purged_holdout(ts, t1, 0.2)
    days = (ts - ts.min()) // np.timedelta64(1, "D")
    assert set(days[held_rows]) == set(range(40, 50))
    assert t1[fit_rows].max() < ts[held_rows].min()  # no member-training label reaches into the holdout
    assert set(days[fit_rows]) == set(range(0, 37))  # days 37..39 end their labels inside it: purged


def test_blending_without_validation_rows_holds_out_the_latest_rows():
    X, y, ts, t1, _ = model_panel(**PANEL)
    blend = create_model("blending", "regression", {"members": ["linear"]}, 1, 1)
    blend.fit(X, y, feature_names=PANEL_FEATURES, ts=ts, t1=t1)
    fit_rows, held_rows = purged_holdout(ts, t1, 0.2)
    by_hand = create_model("linear", "regression", {}, 1, 1).fit(X[fit_rows], y[fit_rows], feature_names=PANEL_FEATURES)
    np.testing.assert_allclose(blend.members_[0].predict(X), by_hand.predict(X))
    assert blend.fit_info()["holdout_rows"] == len(held_rows)
    meta_by_hand = create_model("linear", "regression", {}, 1, 1).fit(
        by_hand.predict(X[held_rows])[:, None], y[held_rows], feature_names=["0:linear"]
    )
    np.testing.assert_allclose(blend.predict(X), meta_by_hand.predict(by_hand.predict(X)[:, None]))


@pytest.mark.parametrize("method", ["purged_kfold", "cpcv"])
def test_blending_trains_under_purged_cross_validation(runner, quickstart_data, method):
    members = 'model.params.members=["linear", {name = "lightgbm", params = {n_estimators = 20}}]'
    result, stderr = invoke(
        runner,
        [
            "train",
            "--recipe",
            QUICKSTART,
            *SMALL,
            "--model",
            "blending",
            "--set",
            f"split.method={method}",
            "--set",
            members,
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    oof = pl.read_parquet(run / "cv" / "oof.parquet")
    assert oof.height > 0 and oof["score"].is_finite().all()
    assert read_json(run / "metrics.json")["train"]["model"] == "blending"


@pytest.fixture
def notices(monkeypatch):
    monkeypatch.setattr(device_mod, "_warned", set())
    return CollectingReporter()


@pytest.mark.parametrize("name", ["voting", "stacking", "blending"])
def test_ensemble_hands_its_device_to_members_without_a_false_notice(name, notices):
    X, y, ts, t1, _ = model_panel(**PANEL)
    members = [{"name": "mlp", "params": FAST["mlp"]}, {"name": "lightgbm", "params": FAST["lightgbm"]}]
    params = {"members": members, **({"folds": 3} if name == "stacking" else {})}
    model = create_model(name, "regression", params, 1, 1, device="cpu", reporter=notices, train=TRAIN_FAST)
    assert model._usable_device("cuda:0") == "cuda:0"  # members decide; the ensemble never says "cannot use"
    model.fit(X[:240], y[:240], feature_names=PANEL_FEATURES, X_val=X[240:], y_val=y[240:], ts=ts[:240], t1=t1[:240])
    info = model.fit_info()
    assert not [n for n in notices.texts("notice") if "cannot use device" in n]
    assert [m["device"] for m in info["members"]] == [m.device_ for m in model.members_] == ["cpu", "cpu"]
    assert info["device"] == "cpu"
    model.members_[0].device_ = "cuda:0"  # as if the mlp member had trained on the GPU
    assert model._devices_used() == "cuda:0"
