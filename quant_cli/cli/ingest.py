"""Placeholder: being written."""

from quant_cli.cli.common import DebugOpt, QuietOpt


def ingest(quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Placeholder.

    Example: qfactory ingest
    """
