"""Models declared once (issue 19 §1): self-registration, capability flags checked when a recipe
loads, the [train] loop keys' one source, and each architecture's parameter docs in the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from quant_cli.cli import app
from quant_cli.models.base import REGISTERED
from quant_cli.models.classical import LinearModel
from quant_cli.models.torch.config import LoopConfig
from quant_cli.schema import SCHEMA

QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")
ORIGIN = f"recipe {QUICKSTART}"


def _refused(runner, tmp_path, *sets: str) -> list[str]:
    args = [a for item in sets for a in ("--set", item)]
    result = runner.invoke(
        app,
        [
            "train",
            "--recipe",
            QUICKSTART,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--data-dir",
            str(tmp_path / "data"),
            "--set",
            "model.params={}",
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # refused before any work
    return result.stderr.strip().splitlines()


def test_the_library_path_refuses_too(tmp_path):
    """stages check the flags before any work, for callers that load a recipe without the CLI."""
    from quant_cli import stages
    from quant_cli.errors import RecipeError
    from quant_cli.recipe import load_recipe

    recipe = load_recipe(QUICKSTART, ['model.name="lstm"', "model.params={}", 'model.known_future=["month"]'])
    with pytest.raises(RecipeError, match=r"^recipe: model 'lstm' does not take known-future covariates"):
        stages.train_new(recipe, tmp_path / "data", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_raw_bar_channels_on_a_model_without_them_is_one_line(runner, tmp_path):
    assert _refused(runner, tmp_path, 'model.name="mlp"', 'model.params.inputs="bars"') == [
        f"error: {ORIGIN}: model 'mlp' does not take raw-bar channels (flag bar_channels), which model.params.inputs = "
        "'bars' asks for; use a model that has it (`qfactory train --list-models` shows each model's flags) or change "
        "model.params.inputs"
    ]


def test_a_task_the_model_lacks_is_one_line(runner, tmp_path):
    assert _refused(runner, tmp_path, 'model.name="linear"', 'model.task="classification"') == [
        f"error: {ORIGIN}: model 'linear' does not do classification (flag tasks = 'regression'), which model.task = "
        "'classification' asks for; use a model that has it (`qfactory train --list-models` shows each model's flags) "
        "or change model.task"
    ]


def test_known_future_and_static_covariates_are_refused_for_a_model_without_the_flag(runner, tmp_path):
    assert _refused(runner, tmp_path, 'model.name="lstm"', 'model.known_future=["day_of_week"]') == [
        f"error: {ORIGIN}: model 'lstm' does not take known-future covariates (flag known_future), which "
        "model.known_future = ['day_of_week'] asks for; use a model that has it ('tft') or change model.known_future"
    ]
    assert _refused(runner, tmp_path, 'model.name="transformer"', 'model.static_columns=["sector"]') == [
        f"error: {ORIGIN}: model 'transformer' does not take static covariates (flag static_covariates), which "
        "model.static_columns = ['sector'] asks for; use a model that has it ('tft') or change model.static_columns"
    ]


def test_a_symbol_encoding_the_model_lacks_is_one_line(runner, tmp_path):
    line = _refused(runner, tmp_path, 'model.name="mlp"', 'model.symbol_encoding="index"')[0]
    assert line.startswith(
        f"error: {ORIGIN}: model 'mlp' does not take the symbol encoding 'index' (flag "
        "symbol_encodings = 'none', 'one_hot', 'embedding'), which model.symbol_encoding = 'index'"
    )


def test_known_future_fields_are_checked_by_the_schema(runner):
    result = runner.invoke(app, ["recipe", "show", "--recipe", QUICKSTART, "--set", 'model.known_future=["moon"]'])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --set model.known_future=[\"moon\"]: 'model.known_future' must be one of 'minute', 'hour', "
        "'day_of_week', 'day_of_month', 'month', got 'moon' (did you mean 'month'?)"
    )


def test_switching_model_checks_the_new_model_not_the_recipes_own(runner):
    """quickstart is lightgbm: asking for bars while switching to lstm is the lstm's request."""
    result = runner.invoke(
        app,
        ["recipe", "show", "--recipe", QUICKSTART, "--set", 'model.name="lstm"', "--set", 'model.params.inputs="both"'],
    )
    assert result.exit_code == 0, result.output


def test_list_models_and_recipe_defaults_show_each_architecture_field_with_its_doc(runner):
    listed = runner.invoke(app, ["train", "--list-models"]).stdout.splitlines()
    assert "    kernel_size = 3: an integer in [2, 64] — taps of every causal convolution" in listed
    assert next(line for line in listed if line.startswith("lstm ")).endswith(
        "sequence, bar_channels, sample_weights, gpu, early_stopping"
    )
    text = runner.invoke(app, ["recipe", "defaults"]).stdout
    assert "#   kernel_size = 3  # taps of every causal convolution; an integer in [2, 64]" in text.splitlines()
    assert tomllib.loads(text)["model"]["params"] == {}  # the parameters are comments: the defaults still load


def test_train_loop_keys_have_one_source():
    """LoopConfig's defaults are read from the schema: a schema default moved moves LoopConfig's."""
    for f in dataclasses.fields(LoopConfig):
        assert f.default == SCHEMA["train"][f.name].default and SCHEMA["train"][f.name].kind == f.type, f.name
    assert LoopConfig.from_section({"epochs": 3}) == dataclasses.replace(LoopConfig(), epochs=3)
    source = (Path(__file__).resolve().parents[1] / "quant_cli" / "models" / "torch" / "config.py").read_text()
    assert '_train("epochs")' in source and "= 20" not in source  # no literal default beside the schema's


def test_models_register_themselves_and_names_are_unique():
    assert REGISTERED["linear"] is LinearModel

    class Double(LinearModel, register=False):  # a test double: not registered
        name = "double_linear"

    assert "double_linear" not in REGISTERED
    with pytest.raises(TypeError, match="model name 'linear' of .* is taken by quant_cli.models.classical.LinearModel"):
        type("Clash", (LinearModel,), {"name": "linear"})


def test_the_registry_imports_no_model_and_tabular_lookups_leave_torch_unimported():
    source = (Path(__file__).resolve().parents[1] / "quant_cli" / "models" / "registry.py").read_text()
    assert "from quant_cli.models.boosting" not in source and "from quant_cli.models.torch." not in source
    code = (
        "import sys; from quant_cli.models.registry import model_class; model_class('lightgbm'); "
        "model_class('voting'); assert 'torch' not in sys.modules, 'torch imported'; "
        "assert model_class('tcn').name == 'tcn'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr


def test_the_model_listing_order_does_not_depend_on_import_order():
    def listing(first_imports: str) -> list[str]:
        code = f"{first_imports}from quant_cli.models.registry import all_models; print(' '.join(all_models()))"
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    scrambled = listing("import quant_cli.models.torch.tcn, quant_cli.models.classical; ")
    assert scrambled == listing("")
    # tabular families first, in MODEL_MODULES order; the torch files after them, by file name
    assert scrambled[:7] == ["lightgbm", "catboost", "xgboost", "linear", "logistic", "random_forest", "extra_trees"]
    assert {"mlp", "lstm", "gru", "tcn", "transformer"} <= set(scrambled[7:])
