"""qfactory: from raw market bars to a served model."""

__version__ = "0.1.0"

from quant_cli.plugin_api import factor  # noqa: E402 - the decorator factor plugins import (docs/factors.md)

__all__ = ["__version__", "factor"]
