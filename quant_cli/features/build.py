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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from quant_cli.features import engine
from quant_cli.features.align import FeatureOptions
from quant_cli.io import storage_errors
from quant_cli.report import SILENT, Reporter

if TYPE_CHECKING:
    from quant_cli.backend import Backend

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


@dataclass
class PartStats:
    """What spec.json needs of the written table, counted while each part is still in memory."""

    rows: int = 0
    symbols: int = 0  # parts hold disjoint symbol groups, so counts add up
    nulls: dict[str, int] = field(default_factory=dict)

    def merge(self, other: PartStats) -> None:
        self.rows += other.rows
        self.symbols += other.symbols
        for name, count in other.nulls.items():
            self.nulls[name] = self.nulls.get(name, 0) + count

    def add(self, frame: pl.DataFrame, names: Sequence[str]) -> None:
        self.rows += frame.height
        self.symbols += frame.get_column("symbol").n_unique()
        counts = frame.select(pl.col(list(names)).null_count()).row(0, named=True) if names else {}
        for name, count in counts.items():
            self.nulls[name] = self.nulls.get(name, 0) + int(count)


def build_parts(
    load: LoadBars,
    chunks: Sequence[list[str]],
    todo: engine.Plan,
    out_dir: Path,
    options: FeatureOptions | None = None,
    bounds: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
    reporter: Reporter = SILENT,
    backend: Backend | None = None,
    snapshot: Any = None,
) -> tuple[list[Path], PartStats]:
    """Compute `todo` chunk by chunk into `out_dir/part-NNNNN.parquet`; returns the parts in order and their stats.

    In this process (no backend, or local with one job): while a group is computed, the next
    group's bars are read and the previous part is written on background threads (polars
    releases the GIL; writing a few GB of floats is disk-bound), so at most three groups are in
    memory. On a parallel backend (local jobs > 1, ray) each group is one task that reads its bars
    from the pinned `snapshot`, computes and writes its part; the parts are the same files.
    """
    with storage_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    staged = bool(todo.stage2)
    if backend is not None and not backend.in_process and snapshot is not None:
        parts, stats = _build_on(backend, snapshot, chunks, todo, out_dir, options, bounds, reporter)
        if staged:
            _add_cross_sectional(parts, todo, bounds, stats)
        return parts, stats
    parts: list[Path] = []
    stats = PartStats()
    with _Writer() as writer, ThreadPoolExecutor(max_workers=1, thread_name_prefix="qfactory-read") as reader:
        upcoming = reader.submit(load, list(chunks[0])) if chunks else None
        for i, _ in enumerate(reporter.track(chunks, "features", total=len(chunks))):
            bars = upcoming.result()
            upcoming = reader.submit(load, list(chunks[i + 1])) if i + 1 < len(chunks) else None
            engine.check_bars(bars)
            first = engine.stage1(bars, todo, options)
            frame = (first if staged else _filtered(engine.finish(first, todo), bounds)).collect(engine=engine.ENGINE)
            if not staged:
                stats.add(frame, todo.names)
            parts.append(out_dir / f"part-{i:05d}.parquet")
            writer.submit(frame, parts[-1])
    if staged:
        _add_cross_sectional(parts, todo, bounds, stats)
    return parts, stats


@dataclass
class PartTask:
    """One symbol group's part, as a backend task: everything is a plain picklable value."""

    snapshot: Any  # a pinned data.store.Snapshot (or AdjustedSnapshot): reads that version only
    symbols: list[str]
    todo: engine.Plan
    options: FeatureOptions | None
    bounds: tuple[dt.datetime | None, dt.datetime | None]
    path: Path


def build_part(task: PartTask) -> PartStats:
    """Compute and write one part, exactly as the in-process loop does; its stats (empty when staged)."""
    bars = task.snapshot.load_bars(symbols=task.symbols)
    engine.check_bars(bars)
    first = engine.stage1(bars, task.todo, task.options)
    staged = bool(task.todo.stage2)
    frame = (first if staged else _filtered(engine.finish(first, task.todo), task.bounds)).collect(engine=engine.ENGINE)
    stats = PartStats()
    if not staged:
        stats.add(frame, task.todo.names)
    _write(frame, task.path)
    return stats


def _build_on(
    backend: Backend,
    snapshot: Any,
    chunks: Sequence[list[str]],
    todo: engine.Plan,
    out_dir: Path,
    options: FeatureOptions | None,
    bounds: tuple[dt.datetime | None, dt.datetime | None],
    reporter: Reporter,
) -> tuple[list[Path], PartStats]:
    parts = [out_dir / f"part-{i:05d}.parquet" for i in range(len(chunks))]
    tasks = [PartTask(snapshot, list(chunk), todo, options, bounds, path) for chunk, path in zip(chunks, parts)]
    with reporter.working(f"features: {len(tasks)} group(s) on the {backend.name} backend ({backend.jobs} job(s))"):
        results = backend.map(build_part, tasks)
    stats = PartStats()
    for part_stats in results:  # task order = part order: the same totals as the in-process loop
        stats.merge(part_stats)
    return parts, stats


def _add_cross_sectional(
    parts: list[Path], todo: engine.Plan, bounds: tuple[dt.datetime | None, dt.datetime | None], stats: PartStats
) -> None:
    """Pass 2: cross-sectional features over every part at once, reading only the columns they need."""
    needed = [*engine.KEYS, *todo.passthrough, *dict.fromkeys(s.name for f in todo.stage2 for s in f.sources)]
    names = [f.name for f in todo.stage2]
    cross = engine.stage2(pl.scan_parquet(parts).select(needed), todo).select(names).collect(engine=engine.ENGINE)
    offset = 0
    for path in parts:
        first = pl.read_parquet(path)
        piece = cross.slice(offset, first.height)  # scan order = part order = row order
        offset += first.height
        frame = _filtered(engine.finish(pl.concat([first, piece], how="horizontal").lazy(), todo), bounds).collect(
            engine=engine.ENGINE
        )
        stats.add(frame, todo.names)
        _write(frame, path)


class _Writer:
    """Writes parts on one background thread; `submit` waits for the previous write first."""

    def __enter__(self) -> _Writer:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qfactory-write")
        self._pending: Future | None = None
        return self

    def submit(self, frame: pl.DataFrame, path: Path) -> None:
        self._wait()
        self._pending = self._pool.submit(_write, frame, path)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a failed write here, in the building thread
            self._pending = None

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._wait()
        finally:
            self._pool.shutdown(wait=True)


def _filtered(frame: pl.LazyFrame, bounds: tuple[dt.datetime | None, dt.datetime | None]) -> pl.LazyFrame:
    start, end = bounds
    if start is not None:
        frame = frame.filter(pl.col("ts") >= start)
    if end is not None:
        frame = frame.filter(pl.col("ts") <= end)
    return frame


def _write(frame: pl.DataFrame, path: Path) -> None:
    # Uncompressed: float features barely compress, and encoding time dominates the write.
    with storage_errors(path, own_name=False):  # polars: a ComputeError "... (os error 28)", not an OSError
        frame.write_parquet(path, compression="uncompressed", statistics=False)
