"""Labels measured from the execution price, each with its end time `t1` (DESIGN.md §3).

A decision made at the close of bar t is filled at bar t+1 (`next_open` or `next_close`), so a
horizon-h forward return is price[t+1+h] / price[t+1] - 1 with t1 = ts[t+1+h]. With h = 1 this is
exactly the return the backtest books for holding the position one bar.
"""

from __future__ import annotations

import polars as pl

from quant_cli.errors import DataError

EXECUTION_PRICE = {"next_open": "open", "next_close": "close"}


def execution_price(bars: pl.DataFrame, execution: str) -> pl.Expr:
    column = EXECUTION_PRICE[execution]
    if column not in bars.columns:
        raise DataError(
            f"backtest.execution = {execution!r} needs an '{column}' column, but the dataset has only "
            f"{[c for c in bars.columns if c not in ('symbol', 'ts')]}; use execution = 'next_close'"
        )
    return pl.col(column)


def forward_return(bars: pl.DataFrame, horizon: int, execution: str, log: bool = False) -> pl.DataFrame:
    """Columns symbol, ts, label, t1; rows whose label would need bars past the data are dropped."""
    price = execution_price(bars, execution)
    entry = price.shift(-1).over("symbol")
    exit_ = price.shift(-(1 + horizon)).over("symbol")
    label = (exit_ / entry).log() if log else exit_ / entry - 1.0
    return (
        bars.sort("symbol", "ts")
        .select(
            "symbol",
            "ts",
            label.alias("label"),
            pl.col("ts").shift(-(1 + horizon)).over("symbol").alias("t1"),
        )
        .drop_nulls(["label", "t1"])
        .filter(pl.col("label").is_finite())
    )


def make_labels(bars: pl.DataFrame, label_cfg: dict, execution: str) -> pl.DataFrame:
    """Dispatch on `label.kind` (only forward_return so far; the schema rejects other kinds)."""
    return forward_return(bars, label_cfg["horizon"], execution, log=label_cfg["log"])
