"""Versioned feature store (DESIGN.md §2): `<data_dir>/<dataset>/features/<fingerprint>/`.

Each version holds `features.parquet` (symbol, ts, features...) and `spec.json`. The fingerprint
hashes the `[features]` section, the dataset content hash, FEATURE_CODE_VERSION and the
data.symbols/start/end filter: an identical request is served from cache, any change builds a
new version beside the old ones (versions are never modified; delete a folder to reclaim space).

Features are computed over the FULL stored history of the selected symbols, so windows at
data.start are warmed up by earlier bars; rows are filtered to [data.start, data.end] after.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli import __version__, console
from quant_cli.data import store as bar_store
from quant_cli.errors import DataError, RecipeError
from quant_cli.features import registry
from quant_cli.features.engine import compute_features, skipped_message, split_available
from quant_cli.io import read_json, staged_dir, write_json_atomic, write_parquet_atomic
from quant_cli.recipe import Recipe, fingerprint

TABLE = "features.parquet"
SPEC = "spec.json"


@dataclass
class FeatureTable:
    """A built (or cached) feature version. `frame` has symbol, ts, then `columns` in order."""

    fingerprint: str
    path: Path
    columns: list[str]
    frame: pl.DataFrame
    cached: bool


def features_root(data_dir: Path, dataset: str) -> Path:
    return bar_store.dataset_dir(data_dir, dataset) / "features"


def _dataset(recipe: Recipe) -> str:
    dataset = recipe["data"].get("dataset")
    if not dataset:
        raise RecipeError("data.dataset is not set; add `[data] dataset = \"NAME\"` to the recipe or pass --set data.dataset=NAME")
    return dataset


def _data_filter(recipe: Recipe) -> dict[str, Any]:
    """The row filter, normalised so '2020-01-01' and '2020-01-01T00:00' hash the same."""
    data = recipe["data"]
    bounds = {k: bar_store.parse_time(data[k], f"data.{k}") if data.get(k) else None for k in ("start", "end")}
    return {"symbols": sorted(set(data.get("symbols") or [])), **{k: v.isoformat() if v else None for k, v in bounds.items()}}


def feature_fingerprint(features_section: dict[str, Any], content_hash: str, data_filter: dict[str, Any]) -> str:
    return fingerprint({
        "features": features_section,
        "content_hash": content_hash,
        "feature_code_version": registry.FEATURE_CODE_VERSION,
        "data": data_filter,
    })


@dataclass
class _Request:
    """Everything one build needs, resolved and validated up front."""

    recipe: Recipe
    data_dir: Path
    dataset: str
    manifest: dict[str, Any]
    selection: registry.Selection
    data_filter: dict[str, Any]
    folder: Path


def feature_table(recipe: Recipe, data_dir: Path) -> FeatureTable:
    """Build or reuse the feature version a recipe asks for."""
    dataset = _dataset(recipe)
    selection = registry.REGISTRY.resolve(recipe["features"])  # bad names fail before any I/O
    data_filter = _data_filter(recipe)
    manifest = bar_store.read_manifest(data_dir, dataset)
    fp = feature_fingerprint(recipe["features"], manifest["content_hash"], data_filter)
    folder = features_root(data_dir, dataset) / fp
    if (folder / SPEC).is_file() and (folder / TABLE).is_file():
        console.info(f"features: reusing cached version {fp} of dataset {dataset!r}")
        return load_version(folder)
    return _build(_Request(recipe, Path(data_dir), dataset, manifest, selection, data_filter, folder))


def load_version(folder: Path) -> FeatureTable:
    spec = read_json(folder / SPEC)
    if spec.get("skipped"):  # repeat the build's notice: the cached table lacks these too
        console.notice(skipped_message(spec["skipped"]))
    frame = pl.read_parquet(folder / TABLE)
    return FeatureTable(spec["fingerprint"], folder, list(spec["features"]), frame, cached=True)


def _build(req: _Request) -> FeatureTable:
    started = time.perf_counter()
    if req.selection.too_short:
        console.notice(f"skipped {', '.join(req.selection.too_short)}: window below the feature's minimum")
    bars = bar_store.load_bars(req.data_dir, req.dataset, symbols=req.data_filter["symbols"] or None)
    console.info(f"features: computing {len(req.selection.features)} features on {bars.height} bars of dataset {req.dataset!r}")
    frame = _filter_rows(compute_features(bars, req.selection.features), req)
    _, missing = split_available(req.selection.features, bars.columns)
    spec = _spec(req, frame, missing, time.perf_counter() - started)
    try:
        with staged_dir(req.folder) as staging:
            write_parquet_atomic(staging / TABLE, frame)
            write_json_atomic(staging / SPEC, spec)
    except OSError:
        if not (req.folder / SPEC).is_file():
            raise
        # A concurrent build of the same version won the rename; its table is identical.
    console.info(f"features: wrote {len(spec['features'])} features x {frame.height} rows to {req.folder}")
    return FeatureTable(req.folder.name, req.folder, spec["features"], frame, cached=False)


def _filter_rows(frame: pl.DataFrame, req: _Request) -> pl.DataFrame:
    start, end = req.data_filter["start"], req.data_filter["end"]
    if start:
        frame = frame.filter(pl.col("ts") >= dt.datetime.fromisoformat(start))
    if end:
        frame = frame.filter(pl.col("ts") <= dt.datetime.fromisoformat(end))
    if frame.height == 0:
        raise DataError(
            f"data.start={start} / data.end={end} select no bars of dataset {req.dataset!r}, "
            f"which spans {req.manifest.get('start')} to {req.manifest.get('end')}; widen the range"
        )
    return frame


def _spec(req: _Request, frame: pl.DataFrame, missing: dict[str, list[str]], seconds: float) -> dict[str, Any]:
    section = req.recipe["features"]
    columns = frame.columns[2:]
    return {
        "fingerprint": req.folder.name,
        "features": columns,
        "skipped": missing,
        "too_short": req.selection.too_short,
        **{key: section.get(key, []) for key in ("sets", "include", "exclude", "windows")},
        "features_section": section,
        "dataset": req.dataset,
        "content_hash": req.manifest["content_hash"],
        "feature_code_version": registry.FEATURE_CODE_VERSION,
        "qfactory_version": __version__,
        "polars_version": pl.__version__,
        **req.data_filter,
        "rows": frame.height,
        "symbols_count": frame.get_column("symbol").n_unique(),
        "null_share": _null_share(frame, columns),
        "build_seconds": round(seconds, 3),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _null_share(frame: pl.DataFrame, columns: list[str]) -> dict[str, float]:
    if not columns:
        return {}
    shares = frame.select((pl.col(c).null_count() / pl.len()).alias(c) for c in columns).row(0, named=True)
    return {c: round(float(v), 6) for c, v in shares.items()}


def list_versions(data_dir: Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every stored feature version (of one dataset, or of all), oldest first."""
    if dataset is not None:
        bar_store.read_manifest(data_dir, dataset)  # a typo'd dataset is an error, not an empty list
        roots = [features_root(data_dir, dataset)]
    else:
        roots = sorted(p.parent / "features" for p in Path(data_dir).glob(f"*/{bar_store.MANIFEST}"))
    rows = [_version_row(p) for root in roots if root.is_dir() for p in root.glob(f"*/{SPEC}") if not p.parent.name.startswith(".")]
    return sorted(rows, key=lambda r: (str(r["created"]), r["dataset"], r["fingerprint"]))


def _version_row(spec_path: Path) -> dict[str, Any]:
    spec = read_json(spec_path)
    return {
        "dataset": spec.get("dataset"), "fingerprint": spec.get("fingerprint", spec_path.parent.name),
        "created": spec.get("created"), "rows": spec.get("rows"), "features": len(spec.get("features", [])),
        "build_seconds": spec.get("build_seconds"), "path": str(spec_path.parent),
    }
