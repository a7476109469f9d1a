from pathlib import Path

import pytest
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.errors import RecipeError, RunError
from quant_cli.recipe import defaults, defaults_toml, fingerprint, load_recipe, to_toml, with_defaults
from quant_cli.runs.directory import create_run


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
    recipe = load_recipe(
        None, ["model.params.num_leaves=63", "features.windows=[5, 10]", "run.name=abc", "split.purge=false"]
    )
    assert recipe["model"]["params"]["num_leaves"] == 63
    assert recipe["features"]["windows"] == [5, 10]
    assert recipe["run"]["name"] == "abc"
    assert recipe["split"]["purge"] is False


def test_int_accepted_where_float_expected():
    assert load_recipe(None, ["backtest.cost_bps=10"])["backtest"]["cost_bps"] == 10.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[model]\nnme = 'x'\n",
            "recipe {p}: unknown key 'model.nme' in [model] (did you mean 'name'?); allowed: 'name', 'task', 'params'",
        ),
        ("[modle]\n", "recipe {p}: unknown key 'modle' in the top level (did you mean 'model'?)"),
        ("[split]\ntrain = 'half'\n", "recipe {p}: 'split.train' must be a number, got 'half'"),
        ("[label]\nhorizon = 0\n", "recipe {p}: 'label.horizon' must be at least 1, got 0"),
        (
            "[backtest]\nexecution = 'next_opn'\n",
            "recipe {p}: 'backtest.execution' must be one of 'next_open', "
            "'next_close', got 'next_opn' (did you mean 'next_open'?)",
        ),
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
        f"error: recipe {path}: unknown key 'train.epochz' in [train] (did you "
        "mean 'epochs'?); allowed: 'device', 'strict_device', "
        "'early_stopping', 'threads', 'epochs', 'batch_size', 'learning_rate', 'weight_decay', 'schedule', 'warmup', "
        "'grad_clip', 'patience', 'monitor', 'loss', 'pnl_cost_bps', 'pnl_drawdown_penalty', 'precision', "
        "'inference_precision', 'compile', 'nproc'"
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


HORIZON_KEYS = (
    "'kind', 'horizon', 'log', 'vol_scale', 'vol_span', 'cross_sectional', "
    "'threshold', 'profit_take', 'stop_loss', 'vertical'"
)


NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', not starting with '.' (regex [A-Za-z0-9_-][A-Za-z0-9._-]{0,99})"


def error_line(result) -> str:
    """The one stderr line of a failed command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_typo_in_parent_recipe_names_the_parent(runner: CliRunner) -> None:
    Path("base.toml").write_text("[label]\nhorizn = 3\n")
    Path("child.toml").write_text('extends = "base.toml"\n[model]\nname = "lightgbm"\n')
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "child.toml"]))
    assert line == (
        "error: recipe base.toml: unknown key 'label.horizn' in [label] (did you "
        f"mean 'horizon'?); allowed: {HORIZON_KEYS}"
    )


def test_typo_in_child_recipe_names_the_child(runner: CliRunner) -> None:
    Path("base.toml").write_text("[label]\nhorizon = 3\n")
    Path("child.toml").write_text('extends = "base.toml"\n[label]\nkindd = "direction"\n')
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "child.toml"]))
    assert line.startswith("error: recipe child.toml: unknown key 'label.kindd' in [label] (did you mean 'kind'?)")


def test_typo_in_set_names_the_set_item(runner: CliRunner) -> None:
    Path("r.toml").write_text("[label]\nhorizon = 3\n")
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "r.toml", "--set", "label.horizn=3"]))
    assert line == (
        "error: --set label.horizn=3: unknown key 'label.horizn' in [label] (did "
        f"you mean 'horizon'?); allowed: {HORIZON_KEYS}"
    )


def test_bad_set_type_names_the_set_item() -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(None, ["label.horizon=0"])
    assert str(info.value) == "--set label.horizon=0: 'label.horizon' must be at least 1, got 0"


def test_missing_extends_target_names_the_referencing_file(runner: CliRunner) -> None:
    Path("orphan.toml").write_text('extends = "nobase.toml"\n')
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "orphan.toml"]))
    assert line == (
        "error: recipe orphan.toml: 'extends' points to nobase.toml, which is not a file; "
        "fix the 'extends' path (it is relative to the folder of orphan.toml)"
    )


def test_merged_recipe_still_loads_and_child_wins(tmp_path: Path) -> None:
    Path("base.toml").write_text("[label]\nhorizon = 3\n[model.params]\nnum_leaves = 7\n")
    Path("child.toml").write_text('extends = "base.toml"\n[label]\nhorizon = 5\n')
    recipe = load_recipe(Path("child.toml"), ["model.params.num_leaves=15"])
    assert recipe["label"]["horizon"] == 5
    assert recipe["model"]["params"]["num_leaves"] == 15


@pytest.mark.parametrize("name", ["a/b", "../x", "", ".x", "a b"])
def test_bad_run_name_is_exit_2(runner: CliRunner, name: str) -> None:
    Path("r.toml").write_text("[label]\nhorizon = 3\n")
    item = f'run.name="{name}"'
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "r.toml", "--set", item]))
    assert line == f"error: --set {item}: 'run.name' must be {NAME_RULE}, got {name!r}"


def test_bad_run_name_in_recipe_file_names_the_file(runner: CliRunner) -> None:
    Path("r.toml").write_text('[run]\nname = "../escape"\n')
    line = error_line(runner.invoke(app, ["train", "--recipe", "r.toml"]))
    assert line == f"error: recipe r.toml: 'run.name' must be {NAME_RULE}, got '../escape'"
    assert not Path("escape").exists()


def test_good_run_names_are_accepted() -> None:
    for name in ("exp-1", "lgbm_v2.1", "_x"):
        assert load_recipe(None, [f'run.name="{name}"'])["run"]["name"] == name


def test_create_run_rejects_a_bad_name_built_in_code(tmp_path: Path) -> None:
    recipe = with_defaults({"run": {"name": "a/b"}})
    with pytest.raises(RunError, match=r"^run.name 'a/b': must be 1 to 100 letters"):
        with create_run(tmp_path / "runs", recipe):
            pass
    assert not (tmp_path / "runs" / "a").exists()
