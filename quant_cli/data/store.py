"""The bar store (DESIGN.md §2): `<data_dir>/<dataset>/bars/symbol=<S>/part-0.parquet` + manifest.json.

Writes are atomic: the new `bars/` is built in a staging folder together with its manifest
(`bars/_manifest.json`), then swapped in with one rename, so the bars and the manifest that
describes them always change together; if anything fails before the swap the previous store is
untouched byte for byte. `bars/_manifest.json` is the copy readers use; `<dataset>/manifest.json`
is the same manifest, refreshed right after the swap for people and scripts (stores written
before `_manifest.json` existed are read from it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl

from quant_cli.data.frequency import infer_frequency
from quant_cli.errors import DataError
from quant_cli.io import new_temp_dir, read_json, write_json_atomic

MANIFEST = "manifest.json"
BARS_MANIFEST = "_manifest.json"  # inside bars/: moves with the bars it describes


def dataset_dir(data_dir: Path, dataset: str) -> Path:
    if not dataset or "/" in dataset or "\\" in dataset or dataset.startswith("."):
        raise DataError(f"--dataset {dataset!r}: use a plain name such as 'daily' (no slashes, not starting with '.')")
    return Path(data_dir) / dataset


def _manifest_path(root: Path) -> Path:
    """The manifest that belongs to the bars now in place (older stores: the top-level one)."""
    inner = root / "bars" / BARS_MANIFEST
    return inner if inner.is_file() else root / MANIFEST


def read_manifest(data_dir: Path, dataset: str) -> dict[str, Any]:
    path = _manifest_path(dataset_dir(data_dir, dataset))
    if not path.is_file():
        raise DataError(
            f"dataset {dataset!r} not found in {data_dir}; create it with `qfactory ingest --source ... --dataset {dataset}`"
        )
    return read_json(path)


def exists(data_dir: Path, dataset: str) -> bool:
    return _manifest_path(dataset_dir(data_dir, dataset)).is_file()


def check_symbols(manifest: dict[str, Any], symbols: list[str]) -> None:
    """DataError naming the requested symbols the dataset does not have."""
    unknown = sorted(set(symbols) - set(manifest["symbols"]))
    if unknown:
        known = manifest["symbols"]
        raise DataError(f"data.symbols: {unknown[:5]} not in dataset {manifest['dataset']!r}; it has {len(known)} symbols, e.g. {known[:5]}")


def load_bars(
    data_dir: Path,
    dataset: str,
    symbols: list[str] | None = None,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
) -> pl.DataFrame:
    """Canonical bars of a stored dataset, sorted by (symbol, ts), optionally filtered."""
    if symbols:
        check_symbols(read_manifest(data_dir, dataset), symbols)
    else:
        read_manifest(data_dir, dataset)  # a missing dataset is a one-line DataError, not a scan error
    bars_dir = dataset_dir(data_dir, dataset) / "bars"
    if symbols:  # read only those symbols' partitions (a chunked feature build asks for a few at a time)
        lazy = pl.scan_parquet([_partition(bars_dir, s) for s in dict.fromkeys(symbols)], hive_partitioning=False)
    else:
        lazy = pl.scan_parquet(bars_dir / "*" / "*.parquet", hive_partitioning=False)
    if start is not None:
        lazy = lazy.filter(pl.col("ts") >= parse_time(start, "data.start"))
    if end is not None:
        lazy = lazy.filter(pl.col("ts") <= parse_time(end, "data.end"))
    return lazy.collect().sort("symbol", "ts")


@dataclass(frozen=True)
class Snapshot:
    """One pinned version of a dataset. A command pins once when it starts and reads only this.

    `version` is the table version (None where the store has no versions yet); `manifest` is the
    manifest of that version (schema, symbols, per-symbol ranges, frequency, content hash).
    """

    data_dir: Path
    dataset: str
    version: int | None
    manifest: dict[str, Any]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def load_bars(self, symbols: list[str] | None = None, start: str | dt.datetime | None = None,
                  end: str | dt.datetime | None = None) -> pl.DataFrame:
        return load_bars(self.data_dir, self.dataset, symbols=symbols, start=start, end=end)


def pin(data_dir: Path, dataset: str, version: int | None = None) -> Snapshot:
    """The dataset's current version (or `version`, to continue a run on the data it started on)."""
    return Snapshot(Path(data_dir), dataset, version, read_manifest(data_dir, dataset))


def parse_time(value: str | dt.datetime, name: str) -> dt.datetime:
    """An ISO date or datetime; naive values are taken as UTC."""
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{name} {value!r} is not an ISO date or datetime, e.g. '2020-01-31' or '2020-01-31T15:30:00'") from None
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc)


def write_store(data_dir: Path, dataset: str, bars: pl.DataFrame, source: str, frequency: str | None = None) -> dict[str, Any]:
    """Replace the dataset's bars with `bars` (already validated and canonical) atomically."""
    root = dataset_dir(data_dir, dataset)
    root.mkdir(parents=True, exist_ok=True)
    previous = read_json(_manifest_path(root)) if _manifest_path(root).is_file() else None
    staging = new_temp_dir(root, prefix=".staging-bars-")
    try:
        _write_partitions(staging, bars)
        manifest = _manifest(dataset, bars, source, frequency, _content_hash(staging), previous)
        write_json_atomic(staging / BARS_MANIFEST, manifest)
        _swap_in(root, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(root / MANIFEST, manifest)  # the human-facing copy; readers use bars/_manifest.json
    return manifest


def _partition(bars_dir: Path, symbol: str) -> Path:
    return bars_dir / f"symbol={quote(str(symbol), safe='')}" / "part-0.parquet"


def _write_partitions(staging: Path, bars: pl.DataFrame) -> None:
    for (symbol,), part in bars.partition_by("symbol", as_dict=True, maintain_order=True).items():
        path = _partition(staging, symbol)
        path.parent.mkdir()
        part.sort("ts").write_parquet(path, statistics=True)


def _content_hash(folder: Path) -> str:
    """SHA-256 over partition names and bytes: same bars (and writer) → same hash."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.parquet")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _swap_in(root: Path, staging: Path) -> None:
    bars, old = root / "bars", root / f".old-bars-{os.getpid()}"
    if bars.exists():
        os.replace(bars, old)
    try:
        os.replace(staging, bars)
    except BaseException:
        if old.exists():
            os.replace(old, bars)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _manifest(dataset: str, bars: pl.DataFrame, source: str, frequency: str | None, content_hash: str, previous: dict | None) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    per_symbol = bars.group_by("symbol", maintain_order=True).agg(
        pl.len().alias("rows"), pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end")
    )
    return {
        "dataset": dataset,
        "schema": {name: str(dtype) for name, dtype in bars.schema.items()},
        "symbols": per_symbol["symbol"].to_list(),
        "rows": bars.height,
        "start": _iso(bars["ts"].min()),
        "end": _iso(bars["ts"].max()),
        "per_symbol": {r["symbol"]: {"rows": r["rows"], "start": _iso(r["start"]), "end": _iso(r["end"])} for r in per_symbol.iter_rows(named=True)},
        "frequency": frequency or infer_frequency(bars),
        "source": source,
        "content_hash": content_hash,
        "created": previous["created"] if previous else now,
        "updated": now,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
