"""Data sources, the canonical bar schema, and the parquet store."""
