"""Every subcommand, nested ones included, has --help with an example (DESIGN.md §8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quant_cli.cli import app


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in getattr(group, "commands", {}).items():
        paths.append((*prefix, name))
        paths.extend(_command_paths(command, (*prefix, name)))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))


def test_the_walk_finds_nested_commands():
    assert ("features", "ls") in COMMANDS and ("recipe", "show") in COMMANDS and ("train",) in COMMANDS


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "qfactory")
def test_help_has_an_example(runner, path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout


def test_recipe_show_help_example_works(runner: CliRunner) -> None:
    show = typer.main.get_command(app).commands["recipe"].commands["show"]
    example = next(line.strip() for line in show.help.splitlines() if "Example: qfactory " in line)
    args = example.removeprefix("Example: qfactory ").split()
    repo = Path(__file__).resolve().parents[1]
    args = [str(repo / a) if a.startswith("recipes/") else a for a in args]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.stderr
    assert "num_leaves = 15" in shown.stdout
