"""Chunked feature builds: a universe larger than memory, streamed symbol group by symbol group.

Pass 1 loads the bars of one group of symbols at a time (sized by a row budget), computes every
per-symbol feature on them (engine.stage1; a symbol's features depend on its own bars, plus the
benchmark series, which is loaded once and handed to every group) and writes the result as one
parquet part. Memory holds one group, never the universe.

Pass 2, only when cross-sectional features are selected (they need every symbol at a timestamp):
scan the parts lazily, read back only the columns those features need (keys, their source
features, the grouping columns), compute them over the universe, and add them to each part.

Rows are filtered to [start, end] when a part is finished, so windows at `start` are warmed up
by the earlier history and cross-sectional statistics see the same rows either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from quant_cli import console
from quant_cli.features import engine
from quant_cli.features.align import FeatureOptions

DEFAULT_CHUNK_ROWS = 500_000  # ~0.7 GB of Float64 output for the 158-feature Alpha158 set
LoadBars = Callable[[list[str]], pl.DataFrame]


def chunk_symbols(rows_per_symbol: dict[str, int], chunk_rows: int) -> list[list[str]]:
    """Consecutive groups of symbols (in sorted order) holding at most `chunk_rows` rows each (>= 1 symbol)."""
    chunks: list[list[str]] = [[]]
    filled = 0
    for symbol in sorted(rows_per_symbol):
        rows = rows_per_symbol[symbol]
        if chunks[-1] and filled + rows > chunk_rows:
            chunks.append([])
            filled = 0
        chunks[-1].append(symbol)
        filled += rows
    return [c for c in chunks if c]


def build_parts(
    load: LoadBars,
    chunks: Sequence[list[str]],
    todo: engine.Plan,
    out_dir: Path,
    options: FeatureOptions | None = None,
    bounds: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
) -> list[Path]:
    """Compute `todo` chunk by chunk into `out_dir/part-NNNNN.parquet`; returns the parts in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = bool(todo.stage2)
    parts: list[Path] = []
    for i, symbols in enumerate(console.track(chunks, "features", total=len(chunks))):
        bars = load(list(symbols))
        engine.check_bars(bars)
        first = engine.stage1(bars, todo, options)
        frame = first if staged else _filtered(engine.finish(first, todo), bounds)
        path = out_dir / f"part-{i:05d}.parquet"
        _write(frame.collect(), path)
        parts.append(path)
    if staged:
        _add_cross_sectional(parts, todo, bounds)
    return parts


def _add_cross_sectional(parts: list[Path], todo: engine.Plan, bounds: tuple[dt.datetime | None, dt.datetime | None]) -> None:
    """Pass 2: cross-sectional features over every part at once, reading only the columns they need."""
    needed = [*engine.KEYS, *todo.passthrough, *dict.fromkeys(s.name for f in todo.stage2 for s in f.sources)]
    names = [f.name for f in todo.stage2]
    cross = engine.stage2(pl.scan_parquet(parts).select(needed), todo).select(names).collect()
    offset = 0
    for path in parts:
        first = pl.read_parquet(path)
        piece = cross.slice(offset, first.height)  # scan order = part order = row order
        offset += first.height
        frame = engine.finish(pl.concat([first, piece], how="horizontal").lazy(), todo)
        _write(_filtered(frame, bounds).collect(), path)


def _filtered(frame: pl.LazyFrame, bounds: tuple[dt.datetime | None, dt.datetime | None]) -> pl.LazyFrame:
    start, end = bounds
    if start is not None:
        frame = frame.filter(pl.col("ts") >= start)
    if end is not None:
        frame = frame.filter(pl.col("ts") <= end)
    return frame


def _write(frame: pl.DataFrame, path: Path) -> None:
    # Uncompressed: float features barely compress, and encoding time dominates the write.
    frame.write_parquet(path, compression="uncompressed", statistics=False)
