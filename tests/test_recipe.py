from pathlib import Path

import pytest

from quant_cli.cli import app
from quant_cli.errors import RecipeError
from quant_cli.recipe import defaults, defaults_toml, fingerprint, load_recipe, to_toml


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_fill_missing_sections(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.toml", '[data]\ndataset = "d"\n'))
    assert recipe["data"]["dataset"] == "d"
    assert recipe["model"]["name"] == defaults()["model"]["name"]
    assert recipe["split"]["train"] == 0.6


def test_extends_merges_tables_and_child_wins(tmp_path):
    write(tmp_path / "base.toml", '[model]\nname = "lightgbm"\n[model.params]\nnum_leaves = 15\nlearning_rate = 0.1\n')
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\n[model.params]\nnum_leaves = 63\n')
    params = load_recipe(child)["model"]["params"]
    assert params == {"num_leaves": 63, "learning_rate": 0.1}


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.toml")


def test_set_overrides_parse_toml_values(tmp_path):
    recipe = load_recipe(None, ["model.params.num_leaves=63", "features.windows=[5, 10]", "run.name=abc", "split.purge=false"])
    assert recipe["model"]["params"]["num_leaves"] == 63
    assert recipe["features"]["windows"] == [5, 10]
    assert recipe["run"]["name"] == "abc"
    assert recipe["split"]["purge"] is False


def test_int_accepted_where_float_expected():
    assert load_recipe(None, ["backtest.cost_bps=10"])["backtest"]["cost_bps"] == 10.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nnme = 'x'\n", "recipe {p}: unknown key 'model.nme' in [model] (did you mean 'name'?); allowed: 'name', 'task', 'params'"),
        ("[modle]\n", "recipe {p}: unknown key 'modle' in the top level (did you mean 'model'?)"),
        ("[split]\ntrain = 'half'\n", "recipe {p}: 'split.train' must be a number, got 'half'"),
        ("[label]\nhorizon = 0\n", "recipe {p}: 'label.horizon' must be at least 1, got 0"),
        ("[backtest]\nexecution = 'next_opn'\n", "recipe {p}: 'backtest.execution' must be one of 'next_open', 'next_close', got 'next_opn' (did you mean 'next_open'?)"),
        ("[data]\nsymbols = 'AAPL'\n", "recipe {p}: 'data.symbols' must be a list of strings, got 'AAPL'"),
        ("[data\n", "recipe {p}: invalid TOML"),
    ],
)
def test_validation_names_key_file_allowed_values(tmp_path, text, message):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(message.format(p=path))


def test_bad_set_override_is_named():
    with pytest.raises(RecipeError, match=r"--set 'model\.params': expected KEY\.PATH=VALUE"):
        load_recipe(None, ["model.params"])


def test_missing_file():
    with pytest.raises(RecipeError, match="recipe nope.toml: file not found"):
        load_recipe("nope.toml")


def test_resolved_recipe_round_trips_through_toml(tmp_path):
    recipe = load_recipe(None, ["data.dataset=x", "model.params.num_leaves=7"])
    path = write(tmp_path / "resolved.toml", to_toml(recipe))
    assert load_recipe(path) == recipe
    assert fingerprint(load_recipe(path)) == fingerprint(recipe)


def test_defaults_toml_is_a_valid_recipe(tmp_path):
    path = write(tmp_path / "defaults.toml", defaults_toml())
    assert load_recipe(path) == load_recipe(None)


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_cli_recipe_show_unknown_key_exit_2(runner, tmp_path):
    path = write(tmp_path / "bad.toml", "[train]\nepochz = 3\n")
    result = runner.invoke(app, ["recipe", "show", "--recipe", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: recipe {path}: unknown key 'train.epochz' in [train] (did you mean 'epochs'?); allowed: 'device', 'strict_device', "
        "'early_stopping', 'threads', 'epochs', 'batch_size', 'learning_rate', 'weight_decay', 'schedule', 'warmup', "
        "'grad_clip', 'patience', 'monitor', 'loss', 'pnl_cost_bps', 'pnl_drawdown_penalty', 'precision', 'compile'"
    ]
    assert result.stdout == ""


def test_two_rebalance_schedules_are_one_line_at_load(runner, tmp_path):
    """A calendar and a bar count cannot both apply: refused when the recipe loads, naming both."""
    (tmp_path / "r.toml").write_text('[backtest]\nrebalance = "M"\nrebalance_every = 5\n')
    result = runner.invoke(app, ["recipe", "show", "--recipe", str(tmp_path / "r.toml")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: recipe {tmp_path / 'r.toml'}: backtest.rebalance ('M') and backtest.rebalance_every (5) are both set, "
        "and only one schedule can apply; keep the calendar or the bar count"
    )
    assert load_recipe(None, ['backtest.rebalance="M"'])["backtest"]["rebalance"] == "M"  # a calendar alone is fine
