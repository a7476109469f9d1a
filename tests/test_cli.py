"""Every subcommand is discoverable, documented with an example, and fails cleanly."""

import pytest
import typer

from quant_cli.cli import app

REQUIRED = ["ingest", "features", "split", "train", "backtest", "walkforward", "bundle", "serve", "run"]


def all_commands():
    """(path, click command) for every command and subcommand, groups included."""
    root = typer.main.get_command(app)
    stack = [((), root)]
    while stack:
        path, cmd = stack.pop()
        if path:
            yield path, cmd
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click classes)
            stack.extend(((*path, name), sub) for name, sub in cmd.commands.items())


def test_top_level_help_lists_every_stage(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in REQUIRED:
        assert f"  {name}" in result.stdout


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_every_subcommand_has_help_with_an_example(runner, path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: qfactory " in result.stdout


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("qfactory ")


def test_missing_recipe_file_is_exit_2_one_line(runner):
    result = runner.invoke(app, ["train", "--recipe", "missing.toml"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: recipe missing.toml: file not found; pass an existing .toml file to --recipe"


def test_train_needs_exactly_one_of_recipe_or_run(runner):
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: pass exactly one of --recipe (start a new run) or --run (train an existing split run)"


def test_unknown_option_is_a_usage_error(runner):
    result = runner.invoke(app, ["train", "--recipee", "x.toml"])
    assert result.exit_code == 2


def test_list_models(runner):
    result = runner.invoke(app, ["train", "--list-models"])
    assert result.exit_code == 0
    assert result.stdout.startswith("lightgbm")


@pytest.mark.parametrize(("terminal", "quiet", "shown"), [(True, False, True), (False, False, False), (True, True, False)])
def test_long_work_shows_a_spinner_only_on_a_terminal_without_quiet(monkeypatch, terminal, quiet, shown):
    import io

    from rich.console import Console

    from quant_cli.cli import console

    buffer = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buffer, force_terminal=terminal, width=100))
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: terminal)
    console.set_quiet(quiet)
    with console.working("train: fitting lightgbm on 1,000 rows"):
        pass
    assert ("train: fitting lightgbm" in buffer.getvalue()) is shown


def test_a_progress_bar_inside_a_spinner_shares_one_live_display(monkeypatch):
    """A feature build's bar inside the split step's spinner: rich allows one live display at a time."""
    import io

    from rich.console import Console

    from quant_cli.cli import console

    buffer = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buffer, force_terminal=True, width=100))
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: True)
    console.set_quiet(False)
    with console.working("split: preparing"):
        assert list(console.track(range(3), "features", total=3)) == [0, 1, 2]
        assert console._Live.progress is not None
    assert console._Live.progress is None
    assert "split: preparing" in buffer.getvalue() and "features" in buffer.getvalue()
