"""Placeholder: being written."""

from quant_cli.cli.common import DebugOpt, QuietOpt


def backtest(quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Placeholder.

    Example: qfactory backtest
    """
