"""Failures on the command line: one `error:` line on stderr, a JSON object with --json, exit 2 for
bad input (usage, recipe, disk), and no library noise (warnings) on stderr."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.cli.common import cli_errors
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.runs import directory

RECIPE = '[run]\nname = "e"\n[data]\ndataset = "demo"\n[model.params]\nn_estimators = 5\n'


@pytest.fixture
def recipe(tmp_path: Path) -> str:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--recipe", "{recipe}", "--set", "split.val=0.9"],
        ["split", "--recipe", "{recipe}", "--set", "split.val=0.9"],
        ["run", "--recipe", "{recipe}", "--set", "split.val=0.9"],
    ],
)
def test_json_failures_are_a_json_object_on_stdout(runner, recipe, args):
    result = runner.invoke(app, [a.format(recipe=recipe) for a in args] + ["--json"])
    message = (
        f"recipe {recipe}: split.train (0.6) + split.val (0.9) = 1.5 leaves no "
        "test segment; make them sum to less than 1"
    )
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": message, "kind": "RecipeError", "exit_code": 2}
    assert result.stderr.splitlines() == [f"error: {message}"]


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["backtest", "--run", "nope", "--json"], "RunError"),
        (["ingest", "--source", "nowhere.csv", "--dataset", "d", "--json"], "DataError"),
        (["features", "--recipe", "missing.toml", "--json"], "RecipeError"),
        (["train", "--bogus", "--json"], "UsageError"),
    ],
)
def test_every_json_command_reports_failures_as_json(runner, args, kind):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    payload = json.loads(result.stdout)
    assert payload["kind"] == kind and payload["exit_code"] == 2
    assert result.stderr.splitlines() == [f"error: {payload['error']}"]


def test_without_json_stdout_stays_empty_on_failure(runner):
    result = runner.invoke(app, ["backtest", "--run", "nope"])
    assert result.exit_code == 2 and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["train", "--bogus"], "error: No such option: --bogus (see `qfactory train --help`)"),
        (["nosuch"], "error: No such command 'nosuch'. (see `qfactory --help`)"),
        (["features", "ls", "--bogus"], "error: No such option: --bogus (see `qfactory features ls --help`)"),
        (["train", "--recipe"], "error: Option '--recipe' requires an argument."),
    ],
)
def test_usage_errors_are_one_line(runner, args, line):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line]


# ---- disk faults ------------------------------------------------------------------------------------


def _raise(exc: OSError):
    def write(*_args, **_kwargs):
        raise exc

    return write


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (
            errno.ENOSPC,
            "no space left on device",
            "free disk space there, or pass a --runs-dir / --data-dir on another disk",
        ),
        (errno.EROFS, "read-only file system", "the file system is read-only; pass a writable --runs-dir / --data-dir"),
        (
            errno.EACCES,
            "permission denied",
            "check the path and its permissions (--data-dir, --runs-dir, --source, --recipe), or pass another one",
        ),
    ],
)
def test_disk_faults_while_writing_a_run_are_one_line(runner, recipe, monkeypatch, tmp_path, code, reason, fix):
    write_store(tmp_path / "data", "demo", generate(symbols=3, bars=200, seed=1), "test")  # train pins it first
    target = tmp_path / "runs" / "x" / "recipe.toml"
    monkeypatch.setattr(directory, "write_text_atomic", _raise(OSError(code, reason.capitalize(), str(target))))
    result = runner.invoke(app, ["train", "--recipe", recipe, "--json"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {target}: {reason}; {fix}"]
    assert json.loads(result.stdout)["kind"] == "StorageError"
    assert not [p for p in (tmp_path / "runs").iterdir()]  # the half-made run is gone


def test_a_native_library_disk_error_is_read_from_its_message(capsys):
    with pytest.raises(typer.Exit) as info, cli_errors():
        raise OSError("failed to write parquet: No space left on device (os error 28)")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == (
        "error: a path: no space left on device; free disk space there, or pass "
        "a --runs-dir / --data-dir on another disk"
    )


def test_other_os_errors_stay_unexpected(capsys):
    with pytest.raises(typer.Exit) as info, cli_errors():
        raise OSError(errno.EIO, "Input/output error")
    assert info.value.exit_code == 1


# ---- library warnings -------------------------------------------------------------------------------


def _warn_like_sklearn(*_args, **_kwargs):
    from sklearn.metrics import precision_score

    precision_score([0, 0, 1], [0, 0, 0])  # UndefinedMetricWarning: no predicted positives
    raise typer.Exit(0)


def test_library_warnings_do_not_reach_stderr(runner, recipe, monkeypatch):
    monkeypatch.setattr(stages, "train_new", _warn_like_sklearn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as if the user ran with -W always: the CLI still drops them
        result = runner.invoke(app, ["train", "--recipe", recipe])
    assert result.exit_code == 0
    assert "Warning" not in result.stderr and result.stderr == ""


def test_debug_lets_library_warnings_through(runner, recipe, monkeypatch):
    from sklearn.exceptions import UndefinedMetricWarning

    monkeypatch.setattr(stages, "train_new", _warn_like_sklearn)
    with pytest.warns(UndefinedMetricWarning):  # pytest records what would be printed
        runner.invoke(app, ["train", "--recipe", recipe, "--debug"])


def test_huge_values_from_any_module_are_clipped_in_the_error_line(runner, recipe):
    result = runner.invoke(app, ["train", "--recipe", recipe, "--set", "model.name=" + "x" * 100_000])
    assert result.exit_code == 2
    notice, line = result.stderr.splitlines()  # the model switch's notice, then the error
    assert notice.startswith("notice: --set model.name=xxx") and len(notice) < 300
    from quant_cli.errors import one_of
    from quant_cli.models.registry import all_models

    allowed = len(one_of(all_models()))  # the line names every registered model, a list that grows
    assert line.startswith("error: model.name 'xxx") and len(line) < 300 + allowed and "x" * 78 + "…" in line
    assert "x" * 200 not in line


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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--data-dir", "afile"],
            "error: --data-dir afile: not a usable folder (it is a file); pass a "
            "folder path (it is created if missing)",
        ),
        (
            ["--data-dir", "afile/x"],
            "error: --data-dir afile/x: not a usable folder (afile is a file); pass "
            "a folder path (it is created if missing)",
        ),
    ],
)
def test_data_dir_that_is_a_file_is_exit_2(runner: CliRunner, args: list[str], expected: str) -> None:
    Path("afile").write_text("not a folder\n")
    result = runner.invoke(
        app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "2", "--bars", "20", *args]
    )
    assert error_line(result) == expected


def test_runs_dir_under_a_file_is_exit_2(runner: CliRunner) -> None:
    Path("afile").write_text("not a folder\n")
    Path("small.toml").write_text(SMALL)
    result = runner.invoke(app, ["run", "--recipe", "small.toml", "--runs-dir", "afile/x"])
    assert error_line(result) == (
        "error: --runs-dir afile/x: not a usable folder (afile is a file); pass "
        "a folder path (it is created if missing)"
    )


def test_data_home_from_the_environment_names_the_variable(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("afile").write_text("not a folder\n")
    monkeypatch.setenv("QFACTORY_DATA_DIR", "afile")
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "d", "--symbols", "2", "--bars", "20"])
    assert error_line(result) == (
        "error: QFACTORY_DATA_DIR afile: not a usable folder (it is a file); "
        "pass a folder path (it is created if missing)"
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
        result = runner.invoke(
            app,
            [
                "ingest",
                "--source",
                "synthetic",
                "--dataset",
                "d",
                "--symbols",
                "2",
                "--bars",
                "20",
                "--data-dir",
                "locked",
            ],
        )
    finally:
        Path("locked").chmod(0o700)
    assert error_line(result).startswith("error: locked/d: permission denied;")
