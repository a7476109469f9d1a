"""`--model NAME` and `--set model.name=NAME` are one switch: the other model's params are dropped with a notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_cli.cli import app
from quant_cli.io import read_json
from quant_cli.recipe import load_with_overrides
from quant_cli.report import CollectingReporter

RECIPE = '[data]\ndataset = "demo"\n[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 7\nn_estimators = 9\n'
NOTICE = (
    "ignoring model.params written for lightgbm (n_estimators, num_leaves); set them with --set model.params.KEY=VALUE"
)


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
    path.write_text(
        '[run]\nname = "r"\n[data]\ndataset = "tiny"\nsource = "synthetic"\n[data.synthetic]\nsymbols = 3\nbars = 200\n'
        '[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 7\n'
    )
    result = runner.invoke(app, ["run", "--recipe", str(path), "--model", "linear", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    written = (Path(result.stdout.strip()) / "recipe.toml").read_text()
    assert 'name = "linear"' in written and 'device = "cpu"' in written and "num_leaves" not in written


QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")


SMALL = ["--set", "data.synthetic.bars=300", "--set", "data.synthetic.symbols=5"]


def invoke(runner, args):
    result = runner.invoke(app, args)
    return result, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def quickstart_data(runner):
    result = runner.invoke(app, ["ingest", "--recipe", QUICKSTART, *SMALL, "-q"])
    assert result.exit_code == 0, result.output


def test_model_switch_drops_the_recipe_params_with_one_notice(runner, quickstart_data):
    result, stderr = invoke(
        runner,
        [
            "train",
            "--recipe",
            QUICKSTART,
            *SMALL,
            "--model",
            "catboost",
            "--set",
            "model.params.depth=3",
            "--set",
            "model.params.iterations=30",
        ],
    )
    assert result.exit_code == 0, result.output
    assert stderr[0] == (
        "notice: --model catboost: ignoring model.params written for lightgbm "
        "(learning_rate, min_data_in_leaf, n_estimators, num_leaves); set them with --set model.params.KEY=VALUE"
    )
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
    result, stderr = invoke(
        runner,
        ["train", "--recipe", QUICKSTART, *SMALL, "--model", "catboost", "--set", "model.params.min_data_in_leaf=3"],
    )
    assert result.exit_code == 2
    assert stderr[-1].startswith(
        "error: model.params.min_data_in_leaf is not a parameter of model 'catboost'; allowed: 'iterations'"
    )
    assert stderr[-1].endswith("; `qfactory train --list-models` lists each model's parameters")
