"""Subcommands that later work fills in. They exist so scripts can discover them, and exit 2."""

from __future__ import annotations

from quant_cli.cli.common import DebugOpt, QuietOpt, cli_errors
from quant_cli.errors import NotImplementedYet


def _not_yet(name: str) -> None:
    raise NotImplementedYet(
        f"`qfactory {name}` is not implemented yet; meanwhile train and backtest one run with `qfactory run --recipe R`"
    )


def bundle(quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Package a run's model and feature pipeline as a verified inference bundle (not implemented yet).

    Example: qfactory bundle --run latest
    """
    with cli_errors(quiet, debug):
        _not_yet("bundle")


def serve(quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Serve a bundle over HTTP with FastAPI (not implemented yet).

    Example: qfactory serve --bundle runs/latest/bundle
    """
    with cli_errors(quiet, debug):
        _not_yet("serve")
