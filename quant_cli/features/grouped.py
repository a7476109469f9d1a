"""Evaluate per-symbol expressions: one `group_by("symbol").agg(...)`, exploded back to rows.

Inside `agg` every expression sees one symbol's bars only, so windows start at the symbol's own
first bar and a symbol's values never depend on another symbol's rows (the causality harness
compares floats exactly; a rolling sum run over the concatenated column would carry rounding
from the previous symbol). On 800 symbols x 3,400 bars this is about twice as fast as wrapping
each expression in `.over("symbol")`, which scatters every result back separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def per_symbol(lazy: pl.LazyFrame, exprs: Sequence[pl.Expr | str]) -> pl.LazyFrame:
    """symbol, ts and `exprs`, one row per input row; input sorted by (symbol, ts), output too."""
    grouped = lazy.group_by("symbol", maintain_order=True).agg("ts", *exprs)
    schema = grouped.collect_schema()
    scalars = [c for c, dtype in schema.items() if c != "symbol" and not isinstance(dtype, pl.List)]
    if scalars:  # an aggregate (e.g. pl.len()) gives one value per symbol: broadcast it to every bar
        grouped = grouped.with_columns(pl.col(scalars).repeat_by(pl.col("ts").list.len()))
    return grouped.explode(pl.exclude("symbol"))
