"""Datasets written before the Delta store, and leftovers of dead writers.

The old layout is `bars/symbol=<S>/part-0.parquet` + `bars/_manifest.json` (no `_delta_log`).
Decision: such a dataset is **converted on its first write** (any `qfactory ingest` into it, or
`qfactory data convert DATASET`), in place and under the writer lock: its bars become table
version 0 (operation "convert", keeping the old source, frequency and creation time), and only
after that commit are the old files removed. A kill before the commit leaves the old layout as
it was; a kill after it leaves unreferenced old files that no reader sees and that the next write
removes. Readers never convert (a reader may not write): they refuse an old-layout dataset with
one line giving the command that converts it.

The old store swapped `bars/` through `.old-bars-<pid>` and `.staging-bars-*` folders; a kill
between its two renames left no `bars/`. The next write puts the old bars back (then converts
them) and removes every other such folder: under the writer lock none can belong to a live writer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.data import delta
from quant_cli.io import read_json
from quant_cli.report import Reporter

OLD_MANIFEST = "_manifest.json"
OLD_PART = "part-0.parquet"
STALE_PREFIXES = (".staging-", ".old-bars-")


def is_legacy(root: Path) -> bool:
    bars = delta.table_dir(root)
    if not bars.is_dir() or delta.is_table(root):
        return False
    return (bars / OLD_MANIFEST).is_file() or any(bars.glob(f"symbol=*/{OLD_PART}"))


def convert_hint(dataset: str) -> str:
    return (
        f"dataset {dataset!r} is in the old parquet layout (before versioned Delta tables); "
        f"convert it once with `qfactory data convert {dataset}` (any ingest into it converts it too)"
    )


def read_legacy(root: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The old store's bars and manifest (the inner copy moved with the bars; else the top-level one)."""
    bars_dir = delta.table_dir(root)
    inner, outer = bars_dir / OLD_MANIFEST, Path(root) / "manifest.json"
    manifest = read_json(inner) if inner.is_file() else read_json(outer) if outer.is_file() else {}
    parts = sorted(bars_dir.glob(f"symbol=*/{OLD_PART}"))
    bars = pl.read_parquet(parts, hive_partitioning=False) if parts else pl.DataFrame()
    return bars.sort("symbol", "ts") if bars.height else bars, manifest


def remove_legacy_files(root: Path) -> None:
    """After the conversion commit: the old parts and manifest are no longer referenced."""
    bars_dir = delta.table_dir(root)
    (bars_dir / OLD_MANIFEST).unlink(missing_ok=True)
    for part in bars_dir.glob(f"symbol=*/{OLD_PART}"):
        part.unlink(missing_ok=True)


def has_leftover_legacy_files(root: Path) -> bool:
    bars_dir = delta.table_dir(root)
    return delta.is_table(root) and ((bars_dir / OLD_MANIFEST).is_file() or any(bars_dir.glob(f"symbol=*/{OLD_PART}")))


def recover_and_clean(root: Path, reporter: Reporter) -> None:
    """Writer-side, under the lock: restore bars lost between the old swap's renames, drop stale folders."""
    root = Path(root)
    stale = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(STALE_PREFIXES)), key=_mtime)
    if not delta.table_dir(root).exists():
        old = moved_bars(root)
        if old:
            os.replace(old[-1], delta.table_dir(root))
            stale.remove(old[-1])
            reporter.notice(f"{root}: restored the bars an interrupted write had moved to {old[-1].name}")
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def moved_bars(root: Path) -> list[Path]:
    """`.old-bars-*` folders holding old-layout bars, oldest first (the old swap's first rename)."""
    found = [p for p in Path(root).glob(".old-bars-*") if p.is_dir() and any(p.glob(f"symbol=*/{OLD_PART}"))]
    return sorted(found, key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
