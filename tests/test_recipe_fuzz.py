"""Recipe inputs found by fuzzing: each is one `error:` line and exit 2, or is accepted as meant."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quant_cli.cli import app
from quant_cli.recipe import load_recipe, to_toml

BASE = '[run]\nname = "fz"\n[data]\ndataset = "demo"\n[model.params]\nn_estimators = 5\n'


def recipe_file(tmp_path: Path, extra: str = "", name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(BASE + extra, encoding="utf-8")
    return path


def fails_with(runner, args: list[str], line: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]


@pytest.mark.parametrize(
    ("item", "line"),
    [
        (
            "label.horizon=12345678901234567890",
            "error: --set label.horizon=12345678901234567890: 'label.horizon' must "
            "be at most 100000, got 12345678901234567890",
        ),
        (
            "train.threads=99999999999999",
            "error: --set train.threads=99999999999999: 'train.threads' must be at most 1000000000, got 99999999999999",
        ),
        (
            "backtest.cost_bps=nan",
            "error: --set backtest.cost_bps=nan: 'backtest.cost_bps' must be a "
            "finite number, got nan; nan and inf are not allowed",
        ),
        (
            "backtest.cost_bps=inf",
            "error: --set backtest.cost_bps=inf: 'backtest.cost_bps' must be a "
            "finite number, got inf; nan and inf are not allowed",
        ),
        (
            "model.params.learning_rate=-inf",
            "error: --set model.params.learning_rate=-inf: "
            "'model.params.learning_rate' must be a finite number, got -inf; nan and "
            "inf are not allowed",
        ),
        (
            "features.windows=[5, 1000000]",
            "error: --set features.windows=[5, 1000000]: 'features.windows' must be at most 100000, got [5, 1000000]",
        ),
    ],
)
def test_out_of_range_and_non_finite_values_are_one_line(runner, tmp_path, item, line):
    fails_with(runner, ["train", "--recipe", str(recipe_file(tmp_path)), "--set", item], line)


def test_non_finite_in_a_recipe_file_names_the_file(runner, tmp_path):
    path = recipe_file(tmp_path, "[backtest]\ncost_bps = nan\n")
    fails_with(
        runner,
        ["train", "--recipe", str(path)],
        f"error: recipe {path}: 'backtest.cost_bps' must be a finite number, got nan; nan and inf are not allowed",
    )


def test_empty_feature_sets_are_refused_when_the_recipe_loads(runner, tmp_path):
    path = recipe_file(tmp_path, "[features]\nsets = []\n")
    fails_with(
        runner,
        ["train", "--recipe", str(path)],
        f"error: recipe {path}: features.sets is empty and features.include names nothing, so there are no features; "
        'list at least one set, e.g. sets = ["core"] (`qfactory features ls-specs`)',
    )


def test_empty_sets_with_an_include_is_fine(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, '[features]\nsets = []\ninclude = ["ret_5"]\n'))
    assert recipe["features"]["include"] == ["ret_5"]


def test_huge_model_parameter_is_refused_before_lightgbm_sees_it(runner, tmp_path):
    fails_with(
        runner,
        ["train", "--recipe", str(recipe_file(tmp_path)), "--set", "model.params.n_estimators=100000000000"],
        "error: model.params.n_estimators: expected an integer >= 1 and at most "
        "2147483647 for model 'lightgbm', got 100000000000",
    )


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_recipe(path)["run"]["name"] == "fz"


def test_a_self_referencing_symlink_is_one_line(runner, tmp_path):
    (tmp_path / "loop.toml").symlink_to("loop.toml")
    path = tmp_path / "child.toml"
    path.write_text('extends = "loop.toml"\n' + BASE, encoding="utf-8")
    fails_with(
        runner,
        ["train", "--recipe", str(path)],
        f"error: recipe {tmp_path / 'loop.toml'}: a symlink loop (the link points "
        "back to itself); point the link at a real .toml file",
    )


def test_a_huge_value_is_not_echoed_in_full(runner, tmp_path):
    name = "a" * 100_000
    path = tmp_path / "long.toml"
    path.write_text(BASE.replace('name = "fz"', f'name = "{name}"'), encoding="utf-8")
    result = runner.invoke(app, ["train", "--recipe", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: recipe {path}: 'run.name' must be 1 to 100 letters")
    assert line.endswith("got '" + "a" * 78 + "…")  # 80 characters of the repr, the last one an ellipsis
    assert len(line) < 400


def test_a_huge_set_item_is_not_echoed_in_full(runner, tmp_path):
    result = runner.invoke(app, ["train", "--recipe", str(recipe_file(tmp_path)), "--set", "run.name=" + "b" * 100_000])
    assert result.exit_code == 2 and len(result.stderr) < 500


# ---- dates -----------------------------------------------------------------------------------------


def test_bare_toml_dates_in_a_file_become_iso_strings(tmp_path):
    path = recipe_file(tmp_path, "[split]\nval_start = 2016-01-01\ntest_start = 2017-01-01T09:30:00Z\n")
    path.write_text(
        path.read_text().replace('dataset = "demo"', 'dataset = "demo"\nstart = 2015-06-01\nend = 2019-12-31')
    )
    recipe = load_recipe(path)
    assert recipe["split"]["val_start"] == "2016-01-01"
    assert recipe["split"]["test_start"] == "2017-01-01T09:30:00+00:00"
    assert (recipe["data"]["start"], recipe["data"]["end"]) == ("2015-06-01", "2019-12-31")
    assert 'val_start = "2016-01-01"' in to_toml(recipe)


def test_bare_toml_dates_with_set(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path), ["split.val_start=2016-01-01", "split.test_start=2017-01-01"])
    assert (recipe["split"]["val_start"], recipe["split"]["test_start"]) == ("2016-01-01", "2017-01-01")


def test_a_date_key_that_is_no_date_is_one_line(runner, tmp_path):
    fails_with(
        runner,
        ["train", "--recipe", str(recipe_file(tmp_path)), "--set", "data.start=soon"],
        "error: --set data.start=soon: 'data.start' must be an ISO date or datetime such as 2016-01-01 or "
        "'2016-01-01T09:30:00', got 'soon'",
    )


# ---- split mistakes, caught at load ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "[split]\ntest_start = 2017-01-01\n",
            "split.test_start is set but split.val_start is not; set both (explicit "
            "boundaries) or neither (the split.train / split.val fractions)",
        ),
        (
            "[split]\nval_start = 2017-01-01\n",
            "split.val_start is set but split.test_start is not; set both (explicit "
            "boundaries) or neither (the split.train / split.val fractions)",
        ),
        (
            "[split]\nval_start = 2018-01-01\ntest_start = 2017-01-01\n",
            "split.val_start (2018-01-01) is after split.test_start (2017-01-01); "
            "the validation segment must start first",
        ),
        (
            "[split]\ntrain = 0.7\nval = 0.3\n",
            "split.train (0.7) + split.val (0.3) = 1 leaves no test segment; make them sum to less than 1",
        ),
    ],
)
def test_split_mistakes_fail_when_the_recipe_loads(runner, tmp_path, extra, message):
    path = recipe_file(tmp_path, extra)
    fails_with(runner, ["split", "--recipe", str(path)], f"error: recipe {path}: {message}")
    assert not (tmp_path / "runs").exists()  # failed before any run directory or feature build


# ---- relative paths ------------------------------------------------------------------------------


def test_relative_paths_in_a_recipe_are_read_from_its_folder(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "r.toml"
    path.write_text('[run]\nruns_dir = "../myruns"\n[data]\nsource = "raw/prices.csv"\ndata_dir = "store"\n')
    recipe = load_recipe(path)
    assert recipe["data"]["source"] == str(folder / "raw" / "prices.csv")
    assert recipe["data"]["data_dir"] == str(folder / "store")
    assert recipe["run"]["runs_dir"] == str(tmp_path / "myruns")


def test_paths_of_an_extended_parent_are_read_from_the_parent_folder(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.toml").write_text('[data]\nsource = "prices.csv"\n')
    (tmp_path / "exp").mkdir()
    child = tmp_path / "exp" / "c.toml"
    child.write_text('extends = "../base/b.toml"\n')
    assert load_recipe(child)["data"]["source"] == str(tmp_path / "base" / "prices.csv")


def test_set_paths_stay_relative_to_the_cwd_and_synthetic_is_no_path(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "r.toml"
    path.write_text('[data]\nsource = "synthetic"\n')
    assert load_recipe(path)["data"]["source"] == "synthetic"
    recipe = load_recipe(path, ["data.source=other.csv", "data.data_dir=/abs/store"])
    assert recipe["data"]["source"] == os.path.join(os.getcwd(), "other.csv")
    assert recipe["data"]["data_dir"] == "/abs/store"
