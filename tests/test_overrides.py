"""`--model NAME` and `--set model.name=NAME` are one switch: the other model's params are dropped with a notice."""

from __future__ import annotations

from pathlib import Path

from quant_cli.cli import app
from quant_cli.recipe import load_with_overrides
from quant_cli.report import CollectingReporter

RECIPE = '[data]\ndataset = "demo"\n[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 7\nn_estimators = 9\n'
NOTICE = ("ignoring model.params written for lightgbm (n_estimators, num_leaves); "
          "set them with --set model.params.KEY=VALUE")


def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    return path


def test_model_option_drops_the_other_models_params(tmp_path):
    reporter = CollectingReporter()
    resolved = load_with_overrides(recipe(tmp_path), ["model.params.depth=3"], "catboost", reporter)
    assert resolved["model"]["name"] == "catboost" and resolved["model"]["params"] == {"depth": 3}
    assert reporter.texts("notice") == [f"--model catboost: {NOTICE}"]


def test_set_model_name_behaves_like_model(tmp_path):
    reporter = CollectingReporter()
    resolved = load_with_overrides(recipe(tmp_path), ["model.name=catboost"], reporter=reporter)
    assert resolved["model"]["name"] == "catboost" and resolved["model"]["params"] == {}
    assert reporter.texts("notice") == [f"--set model.name=catboost: {NOTICE}"]


def test_explicit_params_survive_the_switch_and_same_model_keeps_all(tmp_path):
    kept = load_with_overrides(recipe(tmp_path), ["model.name=xgboost", "model.params.num_leaves=5"])
    assert kept["model"]["params"] == {"num_leaves": 5}
    reporter = CollectingReporter()
    same = load_with_overrides(recipe(tmp_path), ["model.name=lightgbm"], reporter=reporter)
    assert same["model"]["params"] == {"num_leaves": 7, "n_estimators": 9} and reporter.texts() == []


def test_recipe_show_and_run_take_the_switch(runner, tmp_path):
    result = runner.invoke(app, ["recipe", "show", "--recipe", str(recipe(tmp_path)), "--set", "model.name=catboost"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"notice: --set model.name=catboost: {NOTICE}"]
    assert "num_leaves" not in result.stdout
    helped = runner.invoke(app, ["run", "--help"])
    assert "--model" in helped.stdout and "--device" in helped.stdout


def test_run_takes_model_and_device(runner, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nname = "r"\n[data]\ndataset = "tiny"\nsource = "synthetic"\n[data.synthetic]\nsymbols = 3\nbars = 200\n'
                    '[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 7\n')
    result = runner.invoke(app, ["run", "--recipe", str(path), "--model", "linear", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    written = (Path(result.stdout.strip()) / "recipe.toml").read_text()
    assert 'name = "linear"' in written and 'device = "cpu"' in written and "num_leaves" not in written
