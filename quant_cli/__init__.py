"""qfactory: from raw market bars to a served model."""

__version__ = "0.1.0"
