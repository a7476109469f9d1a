"""One contract test over the model registry, for every task each model supports (fit → predict →
save → load → identical predictions), plus parameters, weights, early stopping, missing values,
reproducibility and devices. The torch models pass the same contract and reproducibility checks,
with more, in the model-zoo harness (tests/test_model_zoo.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TORCH_FAST, TRAIN_FAST, model_panel, params_for

from quant_cli.cli import app
from quant_cli.errors import ModelError
from quant_cli.models.params import kind_of
from quant_cli.models.registry import all_models, create_model, describe_models, load_model, model_class
from quant_cli.models.torchmodel import TorchModel
from quant_cli.runs.directory import library_versions

MODELS = all_models()  # every registered model, by name

FEATURES = [f"f{i}" for i in range(6)]

_FAST_LGB = {"n_estimators": 40, "min_data_in_leaf": 10}
# Small settings so the suite stays fast; everything else is each model's declared default.
FAST = {
    "lightgbm": _FAST_LGB,
    "catboost": {"iterations": 40, "depth": 4},
    "xgboost": {"n_estimators": 40, "max_depth": 3},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 5},
    "extra_trees": {"n_estimators": 20, "min_samples_leaf": 5},
    **TORCH_FAST,
}


def problem(task="regression", seed=0, n=400, k=6):
    """A planted linear signal on a panel of 4 symbols; classification uses its direction -1/0/1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    y = 0.5 * X[:, 0] - 0.3 * X[:, 1] + rng.normal(scale=0.5, size=n)
    if task == "classification":
        y = np.where(y > 0.3, 1.0, np.where(y < -0.3, -1.0, 0.0))
    day = np.arange(n) // 4
    ts = np.datetime64("2020-01-01", "us") + day.astype("timedelta64[D]")
    t1 = ts + np.timedelta64(2, "D")  # a two-bar label
    symbols = np.array(["A", "B", "C", "D"] * (n // 4))
    return X, y, ts, t1, symbols


def fit(name, task, X, y, ts, t1, *, seed=1, n_train=300, **kwargs):
    model = create_model(name, task, params_for(name, task, FAST), seed=seed, threads=1, train=TRAIN_FAST, **kwargs)
    return model.fit(
        X[:n_train],
        y[:n_train],
        feature_names=FEATURES,
        X_val=X[n_train:],
        y_val=y[n_train:],
        early_stopping=10,
        ts=ts[:n_train],
        t1=t1[:n_train],
    )


# torch models pass the same contract, and more, in tests/test_model_zoo.py
CASES = [(name, task) for name, cls in MODELS.items() for task in cls.tasks if not issubclass(cls, TorchModel)]


@pytest.mark.parametrize("name,task", CASES)
def test_contract(name, task, tmp_path):
    X, y, ts, t1, symbols = problem(task)
    model = create_model(name, task, params_for(name, task, FAST), seed=1, threads=1, train=TRAIN_FAST)
    assert not model.is_fitted()
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(X)
    with pytest.raises(ModelError, match="not fitted"):
        model.save(tmp_path / "early")
    # rows carry their symbols: a sequence model reads each symbol's rows (in order) as its history
    fitted = model.fit(
        X[:300],
        y[:300],
        feature_names=FEATURES,
        X_val=X[300:],
        y_val=y[300:],
        early_stopping=10,
        ts=ts[:300],
        t1=t1[:300],
        symbols=symbols[:300],
        symbols_val=symbols[300:],
    )
    assert fitted is model and model.is_fitted()
    before = model.predict(X, symbols=symbols)
    scored = np.isfinite(before)
    assert before.shape == (len(X),) and before.dtype == np.float64 and scored.all()
    assert model.predict(X[:0], symbols=symbols[:0]).shape == (0,)  # an empty segment is not an error
    assert np.corrcoef(before[scored], y[scored])[0, 1] > 0.3  # it learned the planted relation
    json.dumps(model.fit_info())  # recordable in metrics.json
    if task == "classification":
        proba = model.predict_proba(X, symbols=symbols)
        assert proba.shape == (len(X), 3) and np.allclose(proba[scored].sum(axis=1), 1.0)
        np.testing.assert_allclose(before, proba @ np.array([-1.0, 0.0, 1.0]))  # expected class value
    if MODELS[name].importance:
        importance = model.feature_importance()
        assert list(importance) == FEATURES and all(np.isfinite(v) for v in importance.values())
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.feature_names_ == FEATURES
    np.testing.assert_array_equal(loaded.predict(X, symbols=symbols), before)
    if task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(X, symbols=symbols), model.predict_proba(X, symbols=symbols))


@pytest.mark.parametrize("name,task", CASES)
def test_same_seed_same_predictions(name, task):
    X, y, ts, t1, _ = problem(task)
    runs = [fit(name, task, X, y, ts, t1, seed=3).predict(X) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["lightgbm", "xgboost", "catboost", "logistic", "mlp", "random_forest"])
def test_binary_minus_one_one_scores_are_two_p_minus_one(name):
    X, y, ts, t1, _ = problem()
    y = np.where(y > 0, 1.0, -1.0)
    model = fit(name, "classification", X, y, ts, t1)
    proba = model.predict_proba(X)
    assert model.classes_.tolist() == [-1.0, 1.0] and proba.shape == (len(X), 2)
    np.testing.assert_allclose(model.predict(X), 2 * proba[:, 1] - 1)


@pytest.mark.parametrize("name", [n for n, cls in MODELS.items() if cls.sample_weights and cls.family != "ensemble"])
def test_sample_weights_reach_the_model(name):
    X, y, ts, t1, _ = problem()
    task = MODELS[name].tasks[0]
    y = y if task == "regression" else np.sign(y)
    weight = np.where(np.arange(300) < 150, 1.0, 0.0)  # the second half of the rows does not count
    plain = create_model(name, task, params_for(name, task, FAST), seed=1, threads=1, train=TRAIN_FAST).fit(
        X[:300], y[:300], feature_names=FEATURES
    )
    weighted = create_model(name, task, params_for(name, task, FAST), seed=1, threads=1, train=TRAIN_FAST).fit(
        X[:300], y[:300], feature_names=FEATURES, sample_weight=weight
    )
    assert not np.array_equal(plain.predict(X), weighted.predict(X), equal_nan=True)


def test_zero_weight_rows_are_ignored_exactly_by_linear():
    X, y, *_ = problem()
    weight = np.where(np.arange(300) < 150, 1.0, 0.0)
    weighted = create_model("linear", "regression", {}, 1, 1).fit(
        X[:300], y[:300], feature_names=FEATURES, sample_weight=weight
    )
    subset = create_model("linear", "regression", {}, 1, 1).fit(X[:150], y[:150], feature_names=FEATURES)
    np.testing.assert_allclose(weighted.predict(X), subset.predict(X), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["lightgbm", "catboost", "xgboost", "mlp"])
def test_early_stopping_on_validation_rows(name):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(400, 6)), rng.normal(size=400)  # pure noise: validation loss soon stops improving
    big = {
        "lightgbm": {"n_estimators": 300, "learning_rate": 0.3, "min_data_in_leaf": 5},
        "catboost": {"iterations": 300, "learning_rate": 0.3},
        "xgboost": {"n_estimators": 300, "learning_rate": 0.3},
        "mlp": {},
    }[name]
    train = {"epochs": 200, "learning_rate": 0.01, "patience": 5} if name == "mlp" else None
    model = create_model(name, "regression", big, seed=1, threads=1, train=train)
    model.fit(X[:300], y[:300], feature_names=FEATURES, X_val=X[300:], y_val=y[300:], early_stopping=5)
    info = model.fit_info()
    assert info.get("best_iteration", info.get("epochs_run")) < 200


@pytest.mark.parametrize("name", [n for n, cls in MODELS.items() if cls.family != "ensemble"])
def test_missing_values_are_accepted_or_refused_by_flag(name):
    X, y, ts, t1, _ = problem()
    X = X.copy()
    X[::7, 2] = np.nan
    task = MODELS[name].tasks[0]
    y = y if task == "regression" else np.sign(y)
    model = create_model(name, task, params_for(name, task, FAST), seed=1, threads=1, train=TRAIN_FAST)
    if MODELS[name].missing_values:
        assert np.isfinite(model.fit(X, y, feature_names=FEATURES).predict(X)).all()
    else:
        with pytest.raises(ModelError, match="cannot handle missing feature values"):
            model.fit(X, y, feature_names=FEATURES)


def test_unknown_model_and_param_are_named():
    with pytest.raises(
        ModelError, match=r"model.name 'lightgbn' is not a registered model \(did you mean 'lightgbm'\?\)"
    ):
        model_class("lightgbn")
    with pytest.raises(
        ModelError,
        match=r"model.params.num_leafs is not a parameter of model 'lightgbm' \(did you mean 'num_leaves'\?\)",
    ):
        create_model("lightgbm", "regression", {"num_leafs": 3}, seed=1, threads=1)
    with pytest.raises(
        ModelError,
        match=r"model.params.n_estimator is not a parameter of model 'xgboost' \(did you mean 'n_estimators'\?\)",
    ):
        create_model("xgboost", "regression", {"n_estimator": 3}, seed=1, threads=1)


def test_bad_task_encoding_and_values_are_named():
    with pytest.raises(
        ModelError, match=r"model.task 'classification' is not supported by 'linear'; allowed: 'regression'"
    ):
        create_model("linear", "classification", {}, 1, 1)
    with pytest.raises(
        ModelError, match=r"model.symbol_encoding 'index' is not supported by 'linear'; allowed: 'none', 'one_hot'"
    ):
        create_model("linear", "regression", {}, 1, 1, symbol_encoding="index")
    with pytest.raises(
        ModelError, match=r"model.params.objective 'regression' does not fit model.task 'classification'"
    ):
        create_model("lightgbm", "classification", {"objective": "regression"}, 1, 1)
    with pytest.raises(ModelError, match=r"model.params.hidden: expected a list of positive layer widths"):
        create_model("mlp", "regression", {"hidden": 64}, 1, 1)
    with pytest.raises(
        ModelError, match=r"model.params.l1_ratio: expected a number in \[0, 1\] for model 'linear', got 2$"
    ):
        create_model("linear", "regression", {"l1_ratio": 2}, 1, 1)


def test_classification_refuses_a_continuous_target():
    X, y, *_ = problem()
    with pytest.raises(ModelError, match="needs 2..20 distinct label values"):
        create_model("logistic", "classification", {}, 1, 1).fit(X, y, feature_names=FEATURES)
    with pytest.raises(ModelError, match="predict_proba needs model.task = 'classification'"):
        create_model("linear", "regression", {}, 1, 1).fit(X, y, feature_names=FEATURES).predict_proba(X)


def test_predict_checks_feature_count():
    X, y, *_ = problem()
    model = create_model("linear", "regression", {}, 1, 1).fit(X, y, feature_names=FEATURES)
    with pytest.raises(ModelError, match="must have 6 feature columns"):
        model.predict(X[:, :5])


def test_describe_models_lists_every_model_with_flags():
    rows = {row["name"]: row for row in describe_models()}
    assert set(rows) == set(MODELS)
    assert (
        rows["lightgbm"]["gpu"]
        and rows["lightgbm"]["early_stopping"]
        and "index" in rows["lightgbm"]["symbol_encodings"]
    )
    assert rows["mlp"]["tasks"] == ["regression", "classification"] and "embedding" in rows["mlp"]["symbol_encodings"]
    assert rows["linear"]["tasks"] == ["regression"] and not rows["linear"]["gpu"]
    assert all(row["sample_weights"] for row in rows.values())


QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")


SMALL = ["--set", "data.synthetic.bars=300", "--set", "data.synthetic.symbols=5"]


PANEL_FEATURES = [f"f{i}" for i in range(4)]


FAST_PARAMS = {
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


WRONG_TYPE = {
    "int": ["abc", 1.5, True],
    "float": ["abc", True, float("nan")],
    "bool": [1, "yes"],
    "str": [3, True],
    "list": ["abc"],
    "table": ["abc"],
}


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
                create_model(name, task, {**params_for(name, task, FAST_PARAMS), key: bad}, 1, 1)
            assert f"for model '{name}'" in str(info.value)
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    "name", [n for n, cls in MODELS.items() if "int" in {kind_of(d) for d in cls.defaults.values()}]
)
def test_a_non_integer_for_an_int_param_is_refused_not_truncated(name):
    key = next(k for k, d in MODELS[name].defaults.items() if kind_of(d) == "int")
    with pytest.raises(ModelError, match=rf"model\.params\.{key}: expected an integer"):
        create_model(
            name, MODELS[name].tasks[0], {**params_for(name, MODELS[name].tasks[0], FAST_PARAMS), key: 1.5}, 1, 1
        )


@pytest.mark.parametrize(
    "name,params,message",
    [
        (
            "lightgbm",
            {"num_leaves": "abc"},
            "model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 'abc'",
        ),
        (
            "lightgbm",
            {"learning_rate": -1},
            "model.params.learning_rate: expected a number > 0 for model 'lightgbm', got -1",
        ),
        (
            "lightgbm",
            {"n_estimators": 1.5},
            "model.params.n_estimators: expected an integer >= 1 for model 'lightgbm', got 1.5",
        ),
        (
            "lightgbm",
            {"num_leaves": True},
            "model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got True",
        ),
        (
            "lightgbm",
            {"max_depth": 0},
            "model.params.max_depth: expected an integer >= 1 or -1 (-1: no limit) for model 'lightgbm', got 0",
        ),
        ("xgboost", {"subsample": 0}, "model.params.subsample: expected a number in (0, 1] for model 'xgboost', got 0"),
        ("catboost", {"depth": 17}, "model.params.depth: expected an integer in [1, 16] for model 'catboost', got 17"),
        (
            "random_forest",
            {"bootstrap": 1},
            "model.params.bootstrap: expected true or false for model 'random_forest', got 1",
        ),
        (
            "svm",
            {"gamma": "huge"},
            "model.params.gamma: expected a number > 0 or 'scale' or 'auto' for model 'svm', got 'huge'",
        ),
        ("mlp", {"dropout": 1.0}, "model.params.dropout: expected a number in [0, 1) for model 'mlp', got 1.0"),
        ("linear", {"alpha": -0.5}, "model.params.alpha: expected a number >= 0 for model 'linear', got -0.5"),
    ],
)
def test_out_of_range_values_are_one_named_line(name, params, message):
    with pytest.raises(ModelError) as info:
        create_model(name, MODELS[name].tasks[0], params, 1, 1)
    assert str(info.value) == message


def test_ints_are_accepted_where_floats_are_expected_and_stored_as_floats():
    model = create_model("random_forest", "regression", {"max_features": 1, "max_samples": 1}, 1, 1)
    assert model.params["max_features"] == 1.0 and isinstance(
        model.params["max_features"], float
    )  # all features, not one
    assert create_model("lightgbm", "regression", {"learning_rate": 1}, 1, 1).params["learning_rate"] == 1.0
    assert create_model("random_forest", "regression", {"max_features": "sqrt"}, 1, 1).params["max_features"] == "sqrt"


@pytest.mark.parametrize(
    "value,message",
    [
        ("abc", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 'abc'"),
        ("-1", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got -1"),
        ("1.5", "error: model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 1.5"),
    ],
)
def test_cli_bad_param_value_is_exit_2_before_any_work(runner, quickstart_data, value, message):
    result, stderr = invoke(
        runner, ["train", "--recipe", QUICKSTART, *SMALL, "--set", f"model.params.num_leaves={value}"]
    )
    assert result.exit_code == 2
    assert stderr == [message]  # one line, raised before features or the split were computed
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_library_error_inside_fit_is_one_model_error_line(runner, quickstart_data):
    X, y, *_ = model_panel(**PANEL)
    with pytest.raises(
        ModelError, match=r"^model 'xgboost' could not be fit: Unknown objective function: `nope`; check model.params"
    ):
        create_model("xgboost", "regression", {"objective": "nope", "n_estimators": 5}, 1, 1).fit(
            X, y, feature_names=PANEL_FEATURES
        )
    result, stderr = invoke(
        runner,
        ["train", "--recipe", QUICKSTART, *SMALL, "--model", "xgboost", "--set", "model.params.objective=nope", "-q"],
    )
    assert result.exit_code == 2
    assert len(stderr) == 1 and stderr[0].startswith(
        "error: model 'xgboost' could not be fit: Unknown objective function"
    )


def test_lightgbm_objective_is_checked_before_lightgbm_prints_a_fatal_line():
    with pytest.raises(ModelError, match=r"model.params.objective: expected one of 'auto', 'regression'.* got 'nope'"):
        create_model("lightgbm", "regression", {"objective": "nope"}, 1, 1)


@pytest.mark.parametrize("name", ["random_forest", "extra_trees"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_forest_predictions_are_identical_at_all_threads(name, task):
    X, y, *_ = model_panel(n_ts=400, task=task, **PANEL)
    X_big = np.random.default_rng(1).normal(size=(25_000, X.shape[1]))  # enough rows for parallel chunks

    def fitted():
        params = {"n_estimators": 40, "min_samples_leaf": 2}
        return create_model(name, task, params, seed=3, threads=0).fit(X, y, feature_names=PANEL_FEATURES)

    first, second = fitted(), fitted()
    for rows in (X, X_big):
        runs = [first.predict(rows) for _ in range(5)] + [second.predict(rows)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:])
    one_thread = create_model(name, task, {"n_estimators": 40, "min_samples_leaf": 2}, seed=3, threads=1)
    assert np.array_equal(one_thread.fit(X, y, feature_names=PANEL_FEATURES).predict(X_big), first.predict(X_big))


def test_list_models_shows_each_parameter(runner):
    result = runner.invoke(app, ["train", "--list-models"])
    assert result.exit_code == 0
    assert "    num_leaves = 31: an integer >= 2" in result.stdout.splitlines()


# torch models: tests/test_model_zoo.py checks their probabilities the same way
@pytest.mark.parametrize(
    "name", [n for n, cls in MODELS.items() if "classification" in cls.tasks and cls.family != "neural"]
)
def test_predict_proba_rows_sum_to_one(name):
    X, y, ts, t1, _ = model_panel(task="classification", **PANEL)
    model = create_model(
        name, "classification", params_for(name, "classification", FAST_PARAMS), 1, 1, train=TRAIN_FAST
    )
    model.fit(X[:240], y[:240], feature_names=PANEL_FEATURES, X_val=X[240:], y_val=y[240:], ts=ts[:240], t1=t1[:240])
    proba = model.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (len(X), 3)
    scored = np.isfinite(proba).all(axis=1)  # sequence models leave a window's warm-up unscored
    assert scored.sum() >= len(X) - 3 and np.abs(proba[scored].sum(axis=1) - 1.0).max() <= 1e-12


def test_manifest_records_every_model_library():
    versions = library_versions()
    for name in ("lightgbm", "catboost", "xgboost", "scikit-learn", "torch", "joblib"):
        assert versions[name] != "not installed", name
