"""`qfactory recipe`: see the defaults, and check a recipe before running it."""

from __future__ import annotations

import typer

from quant_cli.cli import console
from quant_cli.cli.common import DebugOpt, RecipeOpt, SetOpt, cli_errors
from quant_cli.models.registry import check_capabilities, params_toml
from quant_cli.recipe import defaults_toml, load_with_overrides, to_toml

app = typer.Typer(
    no_args_is_help=True, help="Inspect recipes.\n\nExample: qfactory recipe show --recipe recipes/quickstart.toml"
)


@app.command("defaults")
def defaults() -> None:
    """Print every recipe key with its default and meaning, as TOML, then each model's parameters (comments).

    Example: qfactory recipe defaults > my.toml
    """
    typer.echo(defaults_toml() + params_toml(), nl=False)


@app.command("show")
def show(recipe: RecipeOpt, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Validate a recipe (with `extends` and --set applied) and print it fully resolved.

    Example: qfactory recipe show --recipe recipes/quickstart.toml --set model.params.num_leaves=15
    """
    with cli_errors(False, debug):
        resolved = load_with_overrides(recipe, set_, reporter=console.REPORTER, check=check_capabilities)
    typer.echo(to_toml(resolved), nl=False)
