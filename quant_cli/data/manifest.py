"""Manifests of a dataset's table versions, and the content hash.

`<dataset>/versions/<N>.json` is the manifest of table version N (what a reader pinned to N
needs: schema, symbols, rows and date range per symbol, frequency, source, content hash). It is
written right after the commit of N, then `<dataset>/manifest.json` (the latest one, for people).
A kill between the commit and these writes loses nothing: `version_manifest` rebuilds a missing
one from the table at N and the commit's own metadata (delta.commit_info), and caches it.

The content hash is a SHA-256 over the bars' values, not over file bytes: the same bars give the
same hash however they were written (one replace, or a series of appends), and any changed
value, row, column or symbol changes it. It is built from one hash per symbol (so an append only
rehashes the symbols it touches) and the table's column names and types.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data import delta
from quant_cli.data.frequency import infer_frequency
from quant_cli.io import read_json, write_json_atomic

MANIFEST = "manifest.json"
VERSIONS = "versions"
HASH_ALGO = "sha256-values-v1"  # bump when the hashing below changes


def version_path(root: Path, version: int) -> Path:
    return Path(root) / VERSIONS / f"{version}.json"


def symbol_hashes(bars: pl.DataFrame) -> dict[str, str]:
    """One hash per symbol over its rows (sorted by ts): every column that holds a value there, by name.

    Vectorised: each column is converted to bytes once for the whole table and sliced per symbol.
    """
    if bars.height == 0:
        return {}
    bars = bars.sort("symbol", "ts")
    columns = sorted(c for c in bars.columns if c != "symbol")
    groups = bars.group_by("symbol", maintain_order=True).agg(
        pl.len().alias("__n"), *(pl.col(c).null_count().alias(c) for c in columns)
    )
    ends = np.cumsum(groups["__n"].to_numpy())
    starts = ends - groups["__n"].to_numpy()
    values = {c: _column_bytes(bars, c) for c in columns}
    out = {}
    for i, symbol in enumerate(groups["symbol"].to_list()):
        digest = hashlib.sha256(f"rows={ends[i] - starts[i]}\n".encode())
        for name in columns:
            if groups[name][i] < ends[i] - starts[i]:
                digest.update(f"{name}:{bars.schema[name]}\n".encode())
                digest.update(values[name](starts[i], ends[i]))
        out[str(symbol)] = digest.hexdigest()
    return out


def _column_bytes(bars: pl.DataFrame, name: str) -> Any:
    """A function (start, end) -> the bytes of rows [start, end) of one column: null mask, then values."""
    series = bars[name]
    nulls = series.is_null().to_numpy()
    if series.dtype in (pl.String, pl.Categorical):
        text = series.cast(pl.String).fill_null("").to_list()
        return lambda a, b: np.packbits(nulls[a:b]).tobytes() + "\x1f".join(text[a:b]).encode()
    if series.dtype.is_temporal():
        raw = series.to_physical().fill_null(0).to_numpy().astype("<i8")
    elif series.dtype == pl.Boolean:
        raw = series.fill_null(False).to_numpy()
    else:
        raw = series.cast(pl.Float64).fill_null(0.0).to_numpy().astype("<f8")
    return lambda a, b: np.packbits(nulls[a:b]).tobytes() + raw[a:b].tobytes()


def content_hash(schema: dict[str, str], hashes: dict[str, str]) -> str:
    payload = {"algo": HASH_ALGO, "schema": sorted(schema.items()), "symbols": sorted(hashes.items())}
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def canonical_schema(schema: dict[str, str]) -> dict[str, str]:
    """symbol, ts, OHLCV, then extras in table order (a Delta schema merge may reorder columns)."""
    front = [c for c in ("symbol", "ts", "open", "high", "low", "close", "volume") if c in schema]
    return {c: schema[c] for c in [*front, *(c for c in schema if c not in front)]}


def per_symbol_stats(lazy: pl.LazyFrame) -> dict[str, dict[str, Any]]:
    """Rows and first/last timestamp of every symbol (reads only the symbol and ts columns)."""
    stats = (
        lazy.group_by("symbol")
        .agg(pl.len().alias("rows"), pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"))
        .collect()
    )
    return {
        r["symbol"]: {"rows": r["rows"], "start": _iso(r["start"]), "end": _iso(r["end"])}
        for r in stats.sort("symbol").iter_rows(named=True)
    }


def build(
    dataset: str,
    version: int,
    schema: dict[str, str],
    per_symbol: dict[str, dict[str, Any]],
    hashes: dict[str, str],
    meta: dict[str, Any],
    updated: str,
) -> dict[str, Any]:
    """The manifest of one table version; `meta` is what the commit recorded (delta.commit)."""
    starts = [v["start"] for v in per_symbol.values() if v["start"]]
    ends = [v["end"] for v in per_symbol.values() if v["end"]]
    return {
        "dataset": dataset,
        "table_version": version,
        "operation": meta.get("operation"),
        "schema": canonical_schema(schema),
        "symbols": sorted(per_symbol),
        "rows": sum(v["rows"] for v in per_symbol.values()),
        "start": min(starts) if starts else None,
        "end": max(ends) if ends else None,
        "per_symbol": per_symbol,
        "frequency": meta.get("frequency"),
        "source": meta.get("source"),
        "content_hash": meta.get("content_hash") or content_hash(schema, hashes),
        "symbol_hashes": dict(sorted(hashes.items())),
        "created": meta.get("created") or updated,
        "updated": updated,
    }


def frame_stats(bars: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return per_symbol_stats(bars.lazy())


def frequency_of(declared: str | None, previous: dict[str, Any] | None, bars: pl.DataFrame) -> str | None:
    """Declared > the dataset's recorded frequency (appends) > inferred from the bars."""
    return declared or (previous or {}).get("frequency") or infer_frequency(bars)


def write_version(root: Path, manifest: dict[str, Any]) -> None:
    """The per-version manifest first (readers pinned to N use it), then the human-facing copy."""
    write_json_atomic(version_path(root, manifest["table_version"]), manifest)
    write_json_atomic(Path(root) / MANIFEST, human(manifest))


def human(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "symbol_hashes"}


def version_manifest(root: Path, dataset: str, table: Any) -> dict[str, Any]:
    """The manifest of the opened table version: the cached file, else rebuilt from the table."""
    version = table.version()
    path = version_path(root, version)
    if path.is_file():
        cached = read_json(path)
        if cached.get("table_version") == version and cached.get("dataset") == dataset:
            return cached
    manifest = rebuild(root, dataset, table)
    try:  # a reader may lack write access; the rebuilt manifest is still right
        write_json_atomic(path, manifest)
    except OSError:
        pass
    return manifest


def rebuild(root: Path, dataset: str, table: Any) -> dict[str, Any]:
    """Everything from the table at its version: values, stats, hashes; source etc. from the commit."""
    version = table.version()
    bars = delta.scan(table).collect()
    schema = {name: str(dtype) for name, dtype in bars.schema.items()}
    info = delta.commit_info(root, version)
    meta = info.get(delta.META_KEY, {})
    updated = from_millis(info.get("timestamp")) if info.get("timestamp") else now()
    hashes = symbol_hashes(bars)
    manifest = build(dataset, version, schema, frame_stats(bars), hashes, {**meta, "content_hash": None}, updated)
    return manifest


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def from_millis(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
