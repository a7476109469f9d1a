"""Regression tests for foundation bugs: recipe error origins, run names, file permissions,
store/manifest atomicity, append validation, unusable homes, delimiter hints, help texts."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import snapshot_tree
from quant_cli.cli import app
from quant_cli.cli.common import cli_errors
from quant_cli.data import store
from quant_cli.errors import RecipeError, RunError
from quant_cli.io import read_json, write_json_atomic
from quant_cli.recipe import load_recipe, with_defaults
from quant_cli.runs.directory import create_run

HORIZON_KEYS = "'kind', 'horizon', 'log', 'vol_scale', 'vol_span', 'cross_sectional', 'threshold', 'profit_take', 'stop_loss', 'vertical'"
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', not starting with '.' (regex [A-Za-z0-9_-][A-Za-z0-9._-]{0,99})"

SMALL = """
[run]
name = "perm"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 6
bars = 300
[model.params]
n_estimators = 20
min_data_in_leaf = 20
[train]
threads = 1
"""


def error_line(result) -> str:
    """The one stderr line of a failed command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------- 1. recipe errors name their layer


def test_typo_in_parent_recipe_names_the_parent(runner: CliRunner) -> None:
    Path("base.toml").write_text("[label]\nhorizn = 3\n")
    Path("child.toml").write_text('extends = "base.toml"\n[model]\nname = "lightgbm"\n')
    line = error_line(runner.invoke(app, ["recipe", "show", "--recipe", "child.toml"]))
    assert line == (
        f"error: recipe base.toml: unknown key 'label.horizn' in [label] (did you mean 'horizon'?); allowed: {HORIZON_KEYS}"
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
        f"error: --set label.horizn=3: unknown key 'label.horizn' in [label] (did you mean 'horizon'?); allowed: {HORIZON_KEYS}"
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


# ---------------------------------------------------------------- 2. run.name


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


# ---------------------------------------------------------------- 3. permissions follow the umask


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_ingest_and_run_outputs_are_readable_by_group_and_others(runner: CliRunner, umask_022) -> None:
    Path("small.toml").write_text(SMALL)
    result = runner.invoke(app, ["run", "--recipe", "small.toml", "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    for root in (run, Path("data") / "syn"):
        modes = _modes(root)
        files = {k: m for k, m in modes.items() if (root / k).is_file()}
        dirs = {k: m for k, m in modes.items() if (root / k).is_dir()}
        assert files and dirs
        assert {k: oct(m) for k, m in files.items() if m != 0o644} == {}, root
        assert {k: oct(m) for k, m in dirs.items() if m != 0o755} == {}, root


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_atomic_json_write_follows_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o600


# ---------------------------------------------------------------- 4. bars and manifest swap together


def _ingest(runner: CliRunner, source: str, dataset: str = "d", *extra: str) -> None:
    result = runner.invoke(app, ["ingest", "--source", source, "--dataset", dataset, "--quiet", *extra])
    assert result.exit_code == 0, result.stderr


def test_each_version_has_its_manifest_and_no_staging_is_left(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    root = Path("data") / "d"
    version = read_json(root / "versions" / "0.json")
    assert {k: v for k, v in version.items() if k != "symbol_hashes"} == read_json(root / "manifest.json")
    assert version["table_version"] == 0 and version["rows"] == 150
    assert sorted(p.name for p in root.iterdir()) == [".writer.lock", "bars", "manifest.json", "versions"]


def test_readers_use_the_version_manifest_not_the_top_level_copy(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    root = Path("data") / "d"
    old_top = (root / "manifest.json").read_bytes()
    _ingest(runner, "synthetic", "d", "--symbols", "4", "--bars", "60")
    # An interruption right after the commit leaves the top-level copy stale: readers must not care.
    (root / "manifest.json").write_bytes(old_top)
    manifest = store.read_manifest(Path("data"), "d")
    assert manifest["rows"] == 240 and len(manifest["symbols"]) == 4 and manifest["table_version"] == 1
    assert store.load_bars(Path("data"), "d").height == manifest["rows"]


def test_a_kill_between_commit_and_manifest_write_is_rebuilt_from_the_table(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    _ingest(runner, "synthetic", "d", "--symbols", "4", "--bars", "60")
    root = Path("data") / "d"
    written = read_json(root / "versions" / "1.json")
    (root / "versions" / "1.json").unlink()
    assert store.read_manifest(Path("data"), "d") == written  # same hash, stats, source and times
    assert store.pin(Path("data"), "d", version=0).manifest["rows"] == 150
    assert store.exists(Path("data"), "d")


# ---------------------------------------------------------------- 5. append keeps adj_close on every bar

WITH_ADJ = "Date,Ticker,Close,Adj Close\n2020-01-02,AAA,10,9.5\n2020-01-03,AAA,11,10.4\n"
WITHOUT_ADJ = "Date,Ticker,Close\n2020-01-06,AAA,12\n2020-01-07,AAA,13\n"


def test_append_without_adj_close_to_a_dataset_with_it_is_rejected(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ)
    Path("b.csv").write_text(WITHOUT_ADJ)
    _ingest(runner, "a.csv")
    before = snapshot_tree(Path("data"))
    line = error_line(runner.invoke(app, ["ingest", "--source", "b.csv", "--dataset", "d", "--mode", "append"]))
    assert line == "error: b.csv: no 'adj_close' column, but dataset 'd' (from a.csv) has one; add 'adj_close' to b.csv, or pass --mode replace"
    assert snapshot_tree(Path("data")) == before


def test_append_with_adj_close_to_a_dataset_without_it_is_rejected(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ.replace("2020-01-0", "2020-02-0"))
    Path("b.csv").write_text(WITHOUT_ADJ)
    _ingest(runner, "b.csv")
    before = snapshot_tree(Path("data"))
    line = error_line(runner.invoke(app, ["ingest", "--source", "a.csv", "--dataset", "d", "--mode", "append"]))
    assert line == "error: a.csv: column 'adj_close' is not in dataset 'd' (from b.csv); drop it from a.csv, or pass --mode replace"
    assert snapshot_tree(Path("data")) == before


def test_append_with_the_same_columns_still_works(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ)
    Path("c.csv").write_text(WITH_ADJ.replace("2020-01-0", "2020-02-0"))
    _ingest(runner, "a.csv")
    _ingest(runner, "c.csv", "d", "--mode", "append")
    bars = store.load_bars(Path("data"), "d")
    assert bars.height == 4 and bars["adj_close"].null_count() == 0


def test_directory_where_one_file_lacks_adj_close_is_ingested_with_nulls(runner: CliRunner) -> None:
    Path("adj").mkdir()
    Path("adj/AAA.csv").write_text("Date,Close,Adj Close\n2020-01-02,10,9.5\n")
    Path("adj/BBB.csv").write_text("Date,Close\n2020-01-02,10\n")
    result = runner.invoke(app, ["ingest", "--source", "adj", "--dataset", "d"])
    assert result.exit_code == 0, result.stderr
    bars = store.load_bars(Path("data"), "d")
    assert bars["adj_close"].to_list() == [9.5, None]


# ---------------------------------------------------------------- 6. unusable homes are bad input


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data-dir", "afile"], "error: --data-dir afile: not a usable folder (it is a file); pass a folder path (it is created if missing)"),
        (["--data-dir", "afile/x"], "error: --data-dir afile/x: not a usable folder (afile is a file); pass a folder path (it is created if missing)"),
    ],
)
def test_data_dir_that_is_a_file_is_exit_2(runner: CliRunner, args: list[str], expected: str) -> None:
    Path("afile").write_text("not a folder\n")
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "2", "--bars", "20", *args])
    assert error_line(result) == expected


def test_runs_dir_under_a_file_is_exit_2(runner: CliRunner) -> None:
    Path("afile").write_text("not a folder\n")
    Path("small.toml").write_text(SMALL)
    result = runner.invoke(app, ["run", "--recipe", "small.toml", "--runs-dir", "afile/x"])
    assert error_line(result) == (
        "error: --runs-dir afile/x: not a usable folder (afile is a file); pass a folder path (it is created if missing)"
    )


def test_data_home_from_the_environment_names_the_variable(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("afile").write_text("not a folder\n")
    monkeypatch.setenv("QFACTORY_DATA_DIR", "afile")
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "2", "--bars", "20"])
    assert error_line(result) == (
        "error: QFACTORY_DATA_DIR afile: not a usable folder (it is a file); pass a folder path (it is created if missing)"
    )


def test_permission_error_on_a_path_is_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info:
        with cli_errors():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/locked/runs")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == (
        "error: /srv/locked/runs: permission denied; check the path and its permissions "
        "(--data-dir, --runs-dir, --source, --recipe), or pass another one"
    )


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_data_dir_is_exit_2(runner: CliRunner) -> None:
    Path("locked").mkdir(mode=0o500)
    try:
        result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "2", "--bars", "20", "--data-dir", "locked"])
    finally:
        Path("locked").chmod(0o700)
    assert error_line(result).startswith("error: locked/d: permission denied;")


# ---------------------------------------------------------------- 7. delimiter hint comes first


def test_semicolon_file_with_decimal_commas_gets_the_delimiter_hint(runner: CliRunner) -> None:
    Path("semi.csv").write_text("Date;Ticker;Close\n2020-01-02;AAA;10,5\n")
    line = error_line(runner.invoke(app, ["ingest", "--source", "semi.csv", "--dataset", "d"]))
    assert line == "error: semi.csv line 1 (header): the header 'Date;Ticker;Close' is one column; the file looks ';'-delimited; pass --delimiter ';'"


def test_extra_fields_in_a_comma_file_still_point_at_the_line(runner: CliRunner) -> None:
    Path("extra.csv").write_text("Date,Ticker,Close\n2020-01-02,AAA,10,5\n")
    line = error_line(runner.invoke(app, ["ingest", "--source", "extra.csv", "--dataset", "d"]))
    assert line == "error: extra.csv line 2: 4 fields but the header has 3; remove the extra fields or quote values that contain the delimiter"


# ---------------------------------------------------------------- 8. help examples and stubs


def test_recipe_show_help_example_works(runner: CliRunner) -> None:
    show = typer.main.get_command(app).commands["recipe"].commands["show"]
    example = next(line.strip() for line in show.help.splitlines() if "Example: qfactory " in line)
    args = example.removeprefix("Example: qfactory ").split()
    repo = Path(__file__).resolve().parents[1]
    args = [str(repo / a) if a.startswith("recipes/") else a for a in args]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.stderr
    assert "num_leaves = 15" in shown.stdout
