"""Model fixes: checked parameter values, blending under cross-validation, bit-reproducible forests,
ensemble devices, --model switching away from the recipe's params, probabilities that sum to 1,
and the library versions recorded in manifest.json."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import TORCH_FAST, TRAIN_FAST, model_panel, params_for
from quant_cli.report import CollectingReporter

from quant_cli.cli import app
from quant_cli.errors import ModelError
from quant_cli.io import read_json
from quant_cli.models import device as device_mod
from quant_cli.splits.stacking import purged_holdout
from quant_cli.models.params import kind_of
from quant_cli.models.registry import all_models, create_model
from quant_cli.runs.directory import library_versions

MODELS = all_models()  # every registered model, by name

QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")
SMALL = ["--set", "data.synthetic.bars=300", "--set", "data.synthetic.symbols=5"]
FEATURES = [f"f{i}" for i in range(4)]
FAST = {
    "lightgbm": {"n_estimators": 20, "min_data_in_leaf": 5},
    "catboost": {"iterations": 20, "depth": 3},
    "xgboost": {"n_estimators": 20, "max_depth": 3},
    "random_forest": {"n_estimators": 10, "min_samples_leaf": 5},
    "extra_trees": {"n_estimators": 10, "min_samples_leaf": 5},
    **TORCH_FAST,
}


PANEL = {"n_features": len(FEATURES), "noise": 0.5}


def invoke(runner, args):
    result = runner.invoke(app, args)
    return result, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def quickstart_data(runner):
    result = runner.invoke(app, ["ingest", "--recipe", QUICKSTART, *SMALL, "-q"])
    assert result.exit_code == 0, result.output


# ---- 1. parameter values are checked at construction ------------------------------------------------

WRONG_TYPE = {"int": ["abc", 1.5, True], "float": ["abc", True, float("nan")], "bool": [1, "yes"], "str": [3, True],
              "list": ["abc"], "table": ["abc"]}


def declared_kind(cls, key: str) -> str:
    limit = cls.limits.get(key)
    return (limit.kind if limit else None) or kind_of(cls.defaults[key])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_declared_param_refuses_a_wrong_type(name):
    cls = MODELS[name]
    task = cls.tasks[0]
    checked = 0
    for key in cls.defaults:
        for bad in WRONG_TYPE[declared_kind(cls, key)]:
            with pytest.raises(ModelError, match=rf"^model\.params\.{key}: expected [^\n]+ got ") as info:
                create_model(name, task, {**params_for(name, task, FAST), key: bad}, 1, 1)
            assert f"for model '{name}'" in str(info.value)
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", [n for n, cls in MODELS.items() if "int" in {kind_of(d) for d in cls.defaults.values()}])
def test_a_non_integer_for_an_int_param_is_refused_not_truncated(name):
    key = next(k for k, d in MODELS[name].defaults.items() if kind_of(d) == "int")
    with pytest.raises(ModelError, match=rf"model\.params\.{key}: expected an integer"):
        create_model(name, MODELS[name].tasks[0], {**params_for(name, MODELS[name].tasks[0], FAST), key: 1.5}, 1, 1)


@pytest.mark.parametrize("name,params,message", [
    ("lightgbm", {"num_leaves": "abc"}, "model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 'abc'"),
    ("lightgbm", {"learning_rate": -1}, "model.params.learning_rate: expected a number > 0 for model 'lightgbm', got -1"),
    ("lightgbm", {"n_estimators": 1.5}, "model.params.n_estimators: expected an integer >= 1 for model 'lightgbm', got 1.5"),
    ("lightgbm", {"num_leaves": True}, "model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got True"),
    ("lightgbm", {"max_depth": 0}, "model.params.max_depth: expected an integer >= 1 or -1 (-1: no limit) for model 'lightgbm', got 0"),
    ("xgboost", {"subsample": 0}, "model.params.subsample: expected a number in (0, 1] for model 'xgboost', got 0"),
    ("catboost", {"depth": 17}, "model.params.depth: expected an integer in [1, 16] for model 'catboost', got 17"),
    ("random_forest", {"bootstrap": 1}, "model.params.bootstrap: expected true or false for model 'random_forest', got 1"),
    ("svm", {"gamma": "huge"}, "model.params.gamma: expected a number > 0 or 'scale' or 'auto' for model 'svm', got 'huge'"),
    ("mlp", {"dropout": 1.0}, "model.params.dropout: expected a number in [0, 1) for model 'mlp', got 1.0"),
    ("linear", {"alpha": -0.5}, "model.params.alpha: expected a number >= 0 for model 'linear', got -0.5"),
])
def test_out_of_range_values_are_one_named_line(name, params, message):
    with pytest.raises(ModelError) as info:
        create_model(name, MODELS[name].tasks[0], params, 1, 1)
    assert str(info.value) == message


def test_ints_are_accepted_where_floats_are_expected_and_stored_as_floats():
    model = create_model("random_forest", "regression", {"max_features": 1, "max_samples": 1}, 1, 1)
    assert model.params["max_features"] == 1.0 and isinstance(model.params["max_features"], float)  # all features, not one
    assert create_model("lightgbm", "regression", {"learning_rate": 1}, 1, 1).params["learning_rate"] == 1.0
    assert create_model("random_forest", "regression", {"max_features": "sqrt"}, 1, 1).params["max_features"] == "sqrt"


@pytest.mark.parametrize("value,message", [
    ("abc", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 'abc'"),
    ("-1", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got -1"),
    ("1.5", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 1.5"),
])
def test_cli_bad_param_value_is_exit_2_before_any_work(runner, quickstart_data, value, message):
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--set", f"model.params.num_leaves={value}"])
    assert result.exit_code == 2
    assert stderr == [message]  # one line, raised before features or the split were computed
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_library_error_inside_fit_is_one_model_error_line(runner, quickstart_data):
    X, y, *_ = model_panel(**PANEL)
    with pytest.raises(ModelError, match=r"^model 'xgboost' could not be fit: Unknown objective function: `nope`; check model.params"):
        create_model("xgboost", "regression", {"objective": "nope", "n_estimators": 5}, 1, 1).fit(X, y, feature_names=FEATURES)
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "xgboost",
                                     "--set", "model.params.objective=nope", "-q"])
    assert result.exit_code == 2
    assert len(stderr) == 1 and stderr[0].startswith("error: model 'xgboost' could not be fit: Unknown objective function")


def test_lightgbm_objective_is_checked_before_lightgbm_prints_a_fatal_line():
    with pytest.raises(ModelError, match=r"model.params.objective: expected one of 'auto', 'regression'.* got 'nope'"):
        create_model("lightgbm", "regression", {"objective": "nope"}, 1, 1)


# ---- 2. blending under cross-validation ------------------------------------------------------------


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
    blend.fit(X, y, feature_names=FEATURES, ts=ts, t1=t1)
    fit_rows, held_rows = purged_holdout(ts, t1, 0.2)
    by_hand = create_model("linear", "regression", {}, 1, 1).fit(X[fit_rows], y[fit_rows], feature_names=FEATURES)
    np.testing.assert_allclose(blend.members_[0].predict(X), by_hand.predict(X))
    assert blend.fit_info()["holdout_rows"] == len(held_rows)
    meta_by_hand = create_model("linear", "regression", {}, 1, 1).fit(
        by_hand.predict(X[held_rows])[:, None], y[held_rows], feature_names=["0:linear"])
    np.testing.assert_allclose(blend.predict(X), meta_by_hand.predict(by_hand.predict(X)[:, None]))


@pytest.mark.parametrize("method", ["purged_kfold", "cpcv"])
def test_blending_trains_under_purged_cross_validation(runner, quickstart_data, method):
    members = 'model.params.members=["linear", {name = "lightgbm", params = {n_estimators = 20}}]'
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "blending",
                                     "--set", f"split.method={method}", "--set", members, "-q"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    oof = pl.read_parquet(run / "cv" / "oof.parquet")
    assert oof.height > 0 and oof["score"].is_finite().all()
    assert read_json(run / "metrics.json")["train"]["model"] == "blending"


# ---- 3. forests are bit-reproducible at threads = 0 -------------------------------------------------


@pytest.mark.parametrize("name", ["random_forest", "extra_trees"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_forest_predictions_are_identical_at_all_threads(name, task):
    X, y, *_ = model_panel(n_ts=400, task=task, **PANEL)
    X_big = np.random.default_rng(1).normal(size=(25_000, X.shape[1]))  # enough rows for parallel chunks

    def fitted():
        params = {"n_estimators": 40, "min_samples_leaf": 2}
        return create_model(name, task, params, seed=3, threads=0).fit(X, y, feature_names=FEATURES)

    first, second = fitted(), fitted()
    for rows in (X, X_big):
        runs = [first.predict(rows) for _ in range(5)] + [second.predict(rows)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:])
    one_thread = create_model(name, task, {"n_estimators": 40, "min_samples_leaf": 2}, seed=3, threads=1)
    assert np.array_equal(one_thread.fit(X, y, feature_names=FEATURES).predict(X_big), first.predict(X_big))


# ---- 4. ensembles record the devices their members used -------------------------------------------


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
    model.fit(X[:240], y[:240], feature_names=FEATURES, X_val=X[240:], y_val=y[240:], ts=ts[:240], t1=t1[:240])
    info = model.fit_info()
    assert not [n for n in notices.texts("notice") if "cannot use device" in n]
    assert [m["device"] for m in info["members"]] == [m.device_ for m in model.members_] == ["cpu", "cpu"]
    assert info["device"] == "cpu"
    model.members_[0].device_ = "cuda:0"  # as if the mlp member had trained on the GPU
    assert model._devices_used() == "cuda:0"


def test_single_models_still_say_when_they_cannot_use_the_device():
    linear = create_model("linear", "regression", {}, 1, 1)
    assert linear._usable_device("cuda:0") == "cpu"  # so `_device` tells the user once


# ---- 5. --model switches away from the recipe's model.params ---------------------------------------


def test_model_switch_drops_the_recipe_params_with_one_notice(runner, quickstart_data):
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "catboost",
                                     "--set", "model.params.depth=3", "--set", "model.params.iterations=30"])
    assert result.exit_code == 0, result.output
    assert stderr[0] == ("notice: --model catboost: ignoring model.params written for lightgbm "
                         "(learning_rate, min_data_in_leaf, n_estimators, num_leaves); set them with --set model.params.KEY=VALUE")
    saved = read_json(Path(result.stdout.strip()) / "model" / "model.json")
    assert saved["name"] == "catboost" and saved["params"]["depth"] == 3 and saved["params"]["iterations"] == 30


def test_model_switch_on_the_quickstart_exits_0(runner, quickstart_data):
    result = runner.invoke(app, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "catboost", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_same_model_keeps_the_recipe_params(runner, quickstart_data):
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "lightgbm"])
    assert result.exit_code == 0 and not [line for line in stderr if "ignoring" in line]
    saved = read_json(Path(result.stdout.strip()) / "model" / "model.json")
    assert saved["params"]["num_leaves"] == 7 and saved["params"]["min_data_in_leaf"] == 500


def test_explicit_param_for_the_wrong_model_is_still_an_error(runner, quickstart_data):
    result, stderr = invoke(runner, ["train", "--recipe", QUICKSTART, *SMALL, "--model", "catboost",
                                     "--set", "model.params.min_data_in_leaf=3"])
    assert result.exit_code == 2
    assert stderr[-1].startswith("error: model.params.min_data_in_leaf is not a parameter of model 'catboost'; allowed: 'iterations'")
    assert stderr[-1].endswith("; `qfactory train --list-models` lists each model's parameters")


def test_list_models_shows_each_parameter(runner):
    result = runner.invoke(app, ["train", "--list-models"])
    assert result.exit_code == 0
    assert "    num_leaves = 31: an integer >= 2" in result.stdout.splitlines()


# ---- 6. class probabilities sum to 1 ------------------------------------------------------------------


# torch models: tests/test_model_zoo.py checks their probabilities the same way
@pytest.mark.parametrize("name", [n for n, cls in MODELS.items()
                                  if "classification" in cls.tasks and cls.family != "neural"])
def test_predict_proba_rows_sum_to_one(name):
    X, y, ts, t1, _ = model_panel(task="classification", **PANEL)
    model = create_model(name, "classification", params_for(name, "classification", FAST), 1, 1, train=TRAIN_FAST)
    model.fit(X[:240], y[:240], feature_names=FEATURES, X_val=X[240:], y_val=y[240:], ts=ts[:240], t1=t1[:240])
    proba = model.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (len(X), 3)
    scored = np.isfinite(proba).all(axis=1)  # sequence models leave a window's warm-up unscored
    assert scored.sum() >= len(X) - 3 and np.abs(proba[scored].sum(axis=1) - 1.0).max() <= 1e-12


# ---- 7. library versions -------------------------------------------------------------------------------


def test_manifest_records_every_model_library():
    versions = library_versions()
    for name in ("lightgbm", "catboost", "xgboost", "scikit-learn", "torch", "joblib"):
        assert versions[name] != "not installed", name
