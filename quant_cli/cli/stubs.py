"""Subcommands that later work fills in. They exist so scripts can discover them, and exit 2."""

from __future__ import annotations

from quant_cli.cli.common import DebugOpt, QuietOpt, cli_errors
from quant_cli.errors import NotImplementedYet


def _not_yet(name: str) -> None:
    raise NotImplementedYet(
        f"`qfactory {name}` is not implemented yet; meanwhile train and backtest one run with `qfactory run --recipe R`"
    )


def walkforward(quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Refit and test over rolling or expanding windows (not implemented yet).

    Example: qfactory walkforward --recipe recipes/quickstart.toml
    """
    with cli_errors(quiet, debug):
        _not_yet("walkforward")
