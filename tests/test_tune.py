"""`qfactory tune`: the space is checked at load, trials never read the test segment, features and
the split are built once, and seeds reproduce studies (interrupted studies: test_tune_interrupts.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tune_helpers import RECIPE, TEST_START, bars, read_json_line, write_recipe

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import RecipeError
from quant_cli.features import build
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.stages import split as split_stage
from quant_cli.tune import objective, space
from quant_cli.tune.study import check, tune_new


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)


def poisoned_from_test_start(raw: pl.DataFrame) -> pl.DataFrame:
    """Every bar from TEST_START on with its prices scrambled (still valid bars)."""
    rng = np.random.default_rng(0)
    in_test = pl.col("ts") >= pl.lit(TEST_START).str.to_datetime(time_zone="UTC")
    noise = pl.Series("noise", np.exp(rng.normal(0, 0.2, raw.height)))
    return (
        raw.with_columns(noise)
        .with_columns(
            [
                pl.when(in_test).then(pl.col(c) * pl.col("noise")).otherwise(pl.col(c)).alias(c)
                for c in ("open", "high", "low", "close")
            ]
        )
        .with_columns(
            pl.max_horizontal("open", "high", "low", "close").alias("high"),
            pl.min_horizontal("open", "high", "low", "close").alias("low"),
        )
        .drop("noise")
    )


def study_table(run_path: Path) -> pl.DataFrame:
    return pl.read_parquet(run_path / "tune" / "trials.parquet").drop("seconds")


# ---- the search space ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "spec", "line"),
    [
        (
            "features.windows",
            "{ choice = [[5], [10]] }",
            "tune.space 'features.windows': only model.*, train.* keys can be tuned "
            "(features and the split are computed once and shared by every trial); "
            "tune other sections with separate studies",
        ),
        (
            "model.params.num_leaf",
            "{ int = [4, 8] }",
            "tune.space 'model.params.num_leaf': 'num_leaf' is not a parameter of "
            "model 'lightgbm' (did you mean 'num_leaves'?); `qfactory train "
            "--list-models` lists each model's parameters",
        ),
        (
            "model.params.num_leaves",
            "{ int = [1, 8] }",
            "tune.space 'model.params.num_leaves': value 1 is refused: "
            "model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 1",
        ),
        (
            "model.params.learning_rate",
            "{ float = [0, 0.1], log = true }",
            "tune.space 'model.params.learning_rate': log = true needs low > 0, got 0",
        ),
        (
            "train.early_stoping",
            "{ int = [1, 8] }",
            "tune.space 'train.early_stoping': 'train.early_stoping' is not a recipe "
            "key (did you mean 'early_stopping'?); see `qfactory recipe defaults`",
        ),
        ("model.name", "{ choice = ['lightgbm', 'nope'] }", None),
    ],
)
def test_every_space_key_is_checked_at_load_in_one_line(runner, recipe_file, tmp_path, key, spec, line):
    recipe_file.write_text(RECIPE.split("[tune.space]")[0] + f'[tune.space]\n"{key}" = {spec}\n', encoding="utf-8")
    result = runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--trials", "1"])
    assert result.exit_code == 2, result.output
    error = result.stderr.strip()
    assert error.count("\n") == 0 and error.startswith("error: tune.space ")
    if line is not None:
        assert error == f"error: {line}"
    assert not (tmp_path / "runs").exists()  # nothing is written before the space is valid


def test_a_conditional_space_samples_only_the_chosen_models_params(recipe_file):
    recipe = load_recipe(
        recipe_file, ['tune.space={"model.name"={choice=["lightgbm","linear"]},"model.params.num_leaves"={int=[4,8]}}']
    )
    dims = check(recipe)
    assert [d.key for d in dims] == ["model.name", "model.params.num_leaves"]
    linear = space.apply(recipe, {"model.name": "linear", "model.params.num_leaves": 5})
    assert linear["model"] == {**recipe["model"], "name": "linear", "params": {}}  # lightgbm's params dropped
    with pytest.raises(RecipeError, match="needs cross-validation folds"):
        check(load_recipe(recipe_file, ['tune.objective="cv.ic_mean"']))


# ---- the study ----------------------------------------------------------------------------------------


def test_same_seed_same_study_and_features_and_split_are_built_once(recipe_file, tmp_path, monkeypatch):
    """Two studies with the same seed agree trial for trial; each builds its split once (whatever
    the number of trials) and the feature version is built once for both."""
    calls = {"prepare": 0, "build_parts": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(split_stage, "prepare", counted("prepare", split_stage.prepare))
    monkeypatch.setattr(build, "build_parts", counted("build_parts", build.build_parts))
    recipe = load_recipe(recipe_file, ["tune.refit=false"])
    first = tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=4)
    assert calls == {"prepare": 1, "build_parts": 1}
    second = tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=2)
    assert calls == {"prepare": 2, "build_parts": 1}
    assert study_table(second.run.path).equals(study_table(first.run.path).head(2))
    table = study_table(first.run.path)
    assert table["state"].to_list().count("complete") >= 2 and "pruned" in table["state"].to_list()
    assert first.refit is None and "references" not in first.run.manifest()


@pytest.mark.parametrize("target", ["val.rank_ic", "backtest.sharpe"])
def test_the_objective_never_reads_the_test_segment(recipe_file, tmp_path, target):
    """Poison every test-segment bar (prices scrambled from test_start on, so its labels and
    features change): the study — every trial's params, value and state — is unchanged."""
    write_store(tmp_path / "poisoned", "p", poisoned_from_test_start(bars()), "test")
    recipe = load_recipe(recipe_file, ["tune.refit=false", f"tune.objective='{target}'"])
    clean = tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=3)
    dirty = tune_new(recipe, tmp_path / "poisoned", tmp_path / "runs", trials=3)

    def test_labels(run):
        rows = pl.read_parquet(run.path / "split" / "rows.parquet")
        return rows.filter(pl.col("segment") == "test")["label"]

    assert not test_labels(clean.run).equals(test_labels(dirty.run))  # the poison reached the test segment
    assert study_table(dirty.run.path).equals(study_table(clean.run.path))


def test_cli_tune_writes_trials_best_recipe_and_refits_once_on_test(runner, recipe_file, tmp_path):
    result = runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--trials", "3"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    assert (run / "tune" / "study.sqlite").is_file() and study_table(run).height == 3
    assert "tune: 3 trials (" in result.stderr and "number  value" in result.stderr
    manifest = read_json(run / "manifest.json")
    best = manifest["tune"]["best"]
    refit_id = manifest["tune"]["refit"]["run_id"]
    assert manifest["references"] == [refit_id]
    best_recipe = load_recipe(run / "tune" / "best.toml")  # what `qfactory train --recipe` loads
    for key, value in best["params"].items():
        assert best_recipe["model"]["params"][key.rsplit(".", 1)[-1]] == value
    metrics = read_json(tmp_path / "runs" / refit_id / "metrics.json")
    assert metrics["test"]["rows"] > 0 and "sharpe" in metrics["backtest"]
    again = runner.invoke(app, ["tune", "--run", str(run), "--trials", "1", "--json"])
    assert again.exit_code == 0, again.output
    assert read_json(run / "manifest.json")["tune"]["trials"] == 4


def test_a_continued_study_equals_one_run_in_one_go(runner, recipe_file, tmp_path):
    args = ["--set", "tune.refit=false", "--json"]
    whole = runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--trials", "3", *args])
    part = runner.invoke(app, ["tune", "--recipe", str(recipe_file), "--trials", "2", *args])
    run = Path(read_json_line(part.stdout)["path"])
    more = runner.invoke(app, ["tune", "--run", str(run), "--trials", "1", "--json"])
    assert (whole.exit_code, part.exit_code, more.exit_code) == (0, 0, 0), more.output
    assert study_table(run).equals(study_table(Path(read_json_line(whole.stdout)["path"])))


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_the_step_report_hook_sees_each_rounds_val_scores_and_can_stop_the_fit(name):
    """The hook tuning prunes through (and torch loops will call per epoch): step n's scores are
    the model's val predictions after n rounds; raising from it stops fitting."""
    from helpers import model_panel

    from quant_cli.models.registry import create_model

    X, y, *_ = model_panel(n_ts=80, n_sym=3, seed=1)
    seen = {}

    def report(step, val_scores):
        seen[step] = val_scores()

    params = {"n_estimators": 12, **({"min_data_in_leaf": 5} if name == "lightgbm" else {})}
    model = create_model(name, "regression", params, 0, 1)
    model.fit(X[:180], y[:180], feature_names=["a", "b", "c"], X_val=X[180:], y_val=y[180:], report=report)
    assert sorted(seen) == list(range(1, 13))
    np.testing.assert_allclose(seen[12], model.predict(X[180:]), rtol=1e-6)

    def prune_at_3(step, val_scores):
        if step == 3:
            raise objective.Pruned

    with pytest.raises(objective.Pruned):
        create_model(name, "regression", params, 0, 1).fit(
            X[:180], y[:180], feature_names=["a", "b", "c"], X_val=X[180:], y_val=y[180:], report=prune_at_3
        )


def test_a_cv_objective_scores_purged_folds_over_train_and_val(recipe_file, tmp_path):
    recipe = load_recipe(
        recipe_file,
        [
            "tune.refit=false",
            "tune.objective='cv.ic_mean'",
            "split.method='purged_kfold'",
            "split.folds=3",
            "tune.sampler='random'",
        ],
    )
    result = tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=2)
    assert result.trials["state"].to_list() == ["complete", "complete"]
    assert result.trials["value"].is_finite().all()


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_torch_models_report_every_epoch_through_the_same_hook(name):
    """The shared torch loop calls the StepReport once per epoch: epoch n's scores are the val
    predictions of the weights after n epochs (the kept best epoch's equal `predict`), and
    raising from it (a pruned trial) stops the fit."""
    from helpers import TORCH_FAST, TRAIN_FAST, model_panel

    from quant_cli.models.panel import as_panel_rows
    from quant_cli.models.registry import create_model

    X, y, ts, _, symbols = model_panel(n_ts=60, n_sym=3, seed=2)
    train, val = X[:120], X[120:]
    if name != "mlp":  # a sequence model reads windows of each symbol's rows
        train, val = as_panel_rows(train, symbols[:120], ts[:120]), as_panel_rows(val, symbols[120:], ts[120:])
    loop = {**TRAIN_FAST, "epochs": 4}
    seen = {}

    def report(step, val_scores):
        seen[step] = val_scores()

    model = create_model(name, "regression", TORCH_FAST[name], 0, 1, train=loop)
    model.fit(
        train,
        y[:120],
        feature_names=["a", "b", "c"],
        X_val=val,
        y_val=y[120:],
        symbols=symbols[:120],
        symbols_val=symbols[120:],
        report=report,
    )
    assert sorted(seen) == [1, 2, 3, 4]
    np.testing.assert_allclose(
        seen[model.best_epoch_], model.predict(val, symbols=symbols[120:]), rtol=1e-6, equal_nan=True
    )

    def prune_at_2(step, val_scores):
        if step == 2:
            raise objective.Pruned

    with pytest.raises(objective.Pruned):
        create_model(name, "regression", TORCH_FAST[name], 0, 1, train=loop).fit(
            train,
            y[:120],
            feature_names=["a", "b", "c"],
            X_val=val,
            y_val=y[120:],
            symbols=symbols[:120],
            symbols_val=symbols[120:],
            report=prune_at_2,
        )


def test_a_refit_that_cannot_trade_one_symbol_is_refused_before_the_first_trial(runner, tmp_path):
    """The refit backtests with [backtest]: long_short on a one-symbol dataset is refused at once,
    not after the study; with refit = false and a val.* objective there is no backtest to refuse."""
    write_store(tmp_path / "data", "p", generate(symbols=1, bars=300, seed=1), "test")
    (tmp_path / "tune.toml").write_text(RECIPE, encoding="utf-8")
    result = runner.invoke(app, ["tune", "--recipe", str(tmp_path / "tune.toml"), "--trials", "2"])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        "error: backtest.strategy = 'long_short' needs at least 2 symbols scored at one timestamp, "
        "but the universe has 1 (S000), so it would never hold a position; "
        "use a strategy that trades one symbol: 'sign', 'long_only', 'threshold' "
        "(e.g. --set backtest.strategy=sign), or add symbols to the dataset"
    ]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    unrefit = runner.invoke(
        app, ["tune", "--recipe", str(tmp_path / "tune.toml"), "--trials", "1", "--set", "tune.refit=false"]
    )
    assert unrefit.exit_code == 0, unrefit.output
