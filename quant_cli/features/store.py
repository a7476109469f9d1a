"""Versioned feature store (DESIGN.md §2): `<data_dir>/<dataset>/features/<fingerprint>/`.

Each version holds `table/part-NNNNN.parquet` (symbol, ts, features...; one part per group of
symbols, in symbol order — read them with `scan_version`) and `spec.json`. The fingerprint
hashes the `[features]` section, the dataset content hash, the feature code (features/code_hash.py:
the source of the kernels, the engine and every family module, plus FEATURE_CODE_VERSION) and the
data.symbols/start/end filter: an identical request is served from cache, any change builds a
new version beside the old ones (versions are never modified; delete a folder to reclaim space).

A build reads bars only through one pinned dataset version (`snapshot`, store.pin), benchmark
bars included, and its fingerprint uses that version's content hash: an ingest committed during
the build cannot mix into it. A version is written once: built in `.staging-<fp>-<pid>-<hex>`,
then renamed into place (a concurrent identical build that renamed first wins; its table is the
same). Staging folders of dead processes are removed by the next build.

Features are computed over the FULL stored history of the selected symbols, so windows at
data.start are warmed up by earlier bars; rows are filtered to [data.start, data.end] after. The
build streams groups of symbols (features/build.py), so a universe larger than memory works.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from quant_cli import __version__
from quant_cli.data import store as bar_store
from quant_cli.errors import DataError, RecipeError
from quant_cli.features import build, code_hash, engine, plugin_check, plugins, registry
from quant_cli.features.align import feature_options
from quant_cli.features.engine import skipped_message
from quant_cli.features.references import References
from quant_cli.io import clean_stale_staging, read_json, staged_dir, write_json_atomic
from quant_cli.recipe import Recipe, fingerprint
from quant_cli.report import SILENT, Reporter

if TYPE_CHECKING:
    from quant_cli.backend import Backend

TABLE = "table"
SPEC = "spec.json"


@dataclass
class FeatureTable:
    """A built (or cached) feature version. `frame` (symbol, ts, then `columns`) is read on first use."""

    fingerprint: str
    path: Path
    columns: list[str]
    rows: int
    cached: bool
    _frame: pl.DataFrame | None = field(default=None, repr=False)

    def scan(self) -> pl.LazyFrame:
        return scan_version(self.path)

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            self._frame = self.scan().collect()
        return self._frame


def scan_version(folder: Path) -> pl.LazyFrame:
    """The feature table of a stored version, lazily, parts in order."""
    return pl.scan_parquet(intact_parts(folder))


def features_root(data_dir: Path, dataset: str) -> Path:
    return bar_store.dataset_dir(data_dir, dataset) / "features"


def _dataset(recipe: Recipe) -> str:
    dataset = recipe["data"].get("dataset")
    if not dataset:
        raise RecipeError(
            'data.dataset is not set; add `[data] dataset = "NAME"` to the recipe or pass --set data.dataset=NAME'
        )
    return dataset


def _data_filter(recipe: Recipe) -> dict[str, Any]:
    """The row filter, normalised so '2020-01-01' and '2020-01-01T00:00' hash the same."""
    data = recipe["data"]
    bounds = {k: bar_store.parse_time(data[k], f"data.{k}") if data.get(k) else None for k in ("start", "end")}
    return {
        "symbols": sorted(set(data.get("symbols") or [])),
        **{k: v.isoformat() if v else None for k, v in bounds.items()},
    }


def feature_fingerprint(
    features_section: dict[str, Any],
    content_hash: str,
    data_filter: dict[str, Any],
    references: dict[str, Any] | None = None,
    plugin_sources: list[plugins.PluginSource] | None = None,
) -> str:
    """`references`: the reference dataset and its content hash, when references come from another dataset.
    Plugins add their sources' SHA-256 (and whether the causality check was skipped, for tests)."""
    extra = plugins.fingerprint_part(plugin_sources or [])
    if extra and plugin_check.skipped():
        extra["plugin_check"] = "skipped"
    return fingerprint(
        {
            "features": features_section,
            "content_hash": content_hash,
            "feature_code_version": registry.FEATURE_CODE_VERSION,
            "feature_code": code_hash.feature_code_hash(),
            "data": data_filter,
            **({"references": references} if references else {}),
            **extra,
        }
    )


@dataclass
class _Request:
    """Everything one build needs, resolved and validated up front."""

    recipe: Recipe
    data_dir: Path
    dataset: str
    snapshot: bar_store.Snapshot
    manifest: dict[str, Any]
    selection: registry.Selection
    data_filter: dict[str, Any]
    folder: Path
    chunk_rows: int
    reporter: Reporter
    backend: Backend | None = None
    references: Any = None  # the reference dataset's pinned snapshot, when references come from another dataset


def feature_table(
    recipe: Recipe,
    data_dir: Path,
    chunk_rows: int | None = None,
    reporter: Reporter = SILENT,
    *,
    snapshot: bar_store.Snapshot | None = None,
    backend: Backend | None = None,
) -> FeatureTable:
    """Build or reuse the feature version a recipe asks for (`chunk_rows`: rows per symbol group).

    `snapshot` is the dataset version the calling stage pinned; None pins the latest one.
    `backend` (quant_cli.backend) runs the symbol groups as tasks; None builds them in this process.
    """
    dataset = _dataset(recipe)
    selection, plugin_sources = plugins.recipe_selection(recipe["features"])  # bad names fail before any I/O
    data_filter = _data_filter(recipe)
    snapshot = snapshot or bar_store.pin(data_dir, dataset)
    if snapshot.dataset != dataset:
        raise DataError(
            f"data.dataset is {dataset!r} but the pinned snapshot is of dataset "
            f"{snapshot.dataset!r}; pin the recipe's dataset"
        )
    manifest = snapshot.manifest
    ref_snapshot = reference_snapshot(recipe, data_dir, snapshot)
    references = _reference_identity(ref_snapshot)
    fp = feature_fingerprint(recipe["features"], manifest["content_hash"], data_filter, references, plugin_sources)
    folder = features_root(data_dir, dataset) / fp
    if (folder / SPEC).is_file() and (folder / TABLE).is_dir():
        reporter.info(f"features: reusing cached version {fp} of dataset {dataset!r}")
        return load_version(folder, reporter)
    request = _Request(
        recipe,
        Path(data_dir),
        dataset,
        snapshot,
        manifest,
        selection,
        data_filter,
        folder,
        chunk_rows or build.DEFAULT_CHUNK_ROWS,
        reporter,
        backend,
        ref_snapshot,
    )
    return _build(request)


def build_features(
    recipe: Recipe, data_dir: Path, backend: str = "local", jobs: int = 1, reporter: Reporter = SILENT
) -> FeatureTable:
    """`qfactory features`: the recipe's feature version, its symbol groups built on `backend`
    (quant_cli.backend) after checking that every worker sees the data home."""
    from quant_cli.backend import open_backend
    from quant_cli.data.ingest import ingest_missing

    plugins.recipe_selection(recipe["features"])  # bad feature names and plugins fail before an ingest
    ingest_missing(recipe, data_dir, reporter)  # a recipe is its own first command on a new machine
    with open_backend(backend, jobs) as opened:
        opened.check_shared({"data home": Path(data_dir)})
        return feature_table(recipe, data_dir, reporter=reporter, backend=opened)


def load_version(folder: Path, reporter: Reporter = SILENT) -> FeatureTable:
    spec = _read_intact(folder)
    if spec.get("skipped"):  # repeat the build's notices: the cached table lacks these too
        reporter.notice(skipped_message(spec["skipped"]))
    _notice_all_null([f for f, share in spec.get("null_share", {}).items() if share >= 1.0], reporter)
    return FeatureTable(spec["fingerprint"], folder, list(spec["features"]), int(spec.get("rows", 0)), cached=True)


def _read_intact(folder: Path) -> dict[str, Any]:
    """A cached version's spec, after a cheap check (footers only) that its files are readable.

    Versions are write-once, so a damaged one (edited, truncated by a full disk) is never
    patched in place: the fix is to delete it and let the next command rebuild it.
    """
    damaged = f"delete {folder} and rerun the command (the version is rebuilt)"
    try:
        spec = read_json(folder / SPEC)
    except ValueError as exc:
        raise DataError(f"feature version {folder.name} is damaged ({SPEC}: {exc}); {damaged}") from None
    if not isinstance(spec, dict):
        raise DataError(f"feature version {folder.name} is damaged ({SPEC}: not a JSON object); {damaged}")
    intact_parts(folder)
    return spec


def intact_parts(folder: Path) -> list[Path]:
    """A version's table parts in order; DataError (delete and rebuild) if one is not readable parquet."""
    parts = sorted((Path(folder) / TABLE).glob("part-*.parquet"))
    for part in parts:  # footers only: cheap, and a damaged part fails here, not deep in a scan
        try:
            pl.read_parquet_schema(part)
        except pl.exceptions.ComputeError as exc:
            raise DataError(
                f"feature version {Path(folder).name} is damaged ({TABLE}/{part.name}: {str(exc).splitlines()[0]}); "
                f"delete {folder} and rerun the command (the version is rebuilt)"
            ) from None
    return parts


def _build(req: _Request) -> FeatureTable:
    started = time.perf_counter()
    if req.selection.too_short:
        req.reporter.notice(f"skipped {', '.join(req.selection.too_short)}: window below the feature's minimum")
    symbols = _symbols(req)
    _check_references(req, symbols)
    load_references = req.references.load_bars if req.references is not None else None
    options = feature_options(req.recipe["features"], req.manifest, req.snapshot.load_bars, load_references)
    columns = list(req.manifest["schema"])
    todo = engine.plan(req.selection.features, columns, options)
    engine.announce(todo, columns, req.reporter)
    rows_per_symbol = _rows_per_symbol(req, symbols)
    _check_plugins(req, todo, rows_per_symbol, options)
    chunks = build.chunk_symbols(rows_per_symbol, req.chunk_rows)
    req.reporter.info(
        f"features: computing {len(todo.names)} features on {len(symbols)} "
        f"symbols of dataset {req.dataset!r} in {len(chunks)} group(s)"
    )
    try:
        clean_stale_staging(req.folder.parent)  # a killed build's folder never blocks or lingers
        with staged_dir(req.folder) as staging:  # renamed into place once: a version is write-once
            load = lambda chunk: req.snapshot.load_bars(symbols=chunk)  # noqa: E731 - one pinned version only
            _, stats = build.build_parts(
                load,
                chunks,
                todo,
                staging / TABLE,
                options,
                _bounds(req),
                req.reporter,
                backend=req.backend,
                snapshot=req.snapshot,
            )
            spec = _spec(req, stats, todo, time.perf_counter() - started)
            write_json_atomic(staging / SPEC, spec)
    except OSError:
        if not (req.folder / SPEC).is_file():
            raise
        # A concurrent build of the same version won the rename; its table is identical.
        return load_version(req.folder, req.reporter)
    _notice_all_null([f for f in todo.names if stats.nulls.get(f, 0) >= stats.rows], req.reporter)
    req.reporter.info(f"features: wrote {len(spec['features'])} features x {spec['rows']} rows to {req.folder}")
    return FeatureTable(req.folder.name, req.folder, spec["features"], spec["rows"], cached=False)


def _check_plugins(req: _Request, todo: engine.Plan, rows_per_symbol: dict[str, int], options: Any) -> None:
    """Plugin factors must prove causal on this dataset's bars before they are built (plugin_check.py)."""
    features = [f for f in todo.stage1 if f.family.plugin is not None]
    if not features:
        return
    if plugin_check.skipped():  # the test-only switch, or an audit's private refit (plugin_check.py)
        req.reporter.warn(f"features: the plugin causality check is skipped ({plugin_check.SKIP_ENV}: tests only)")
        return
    with req.reporter.working(f"features: checking {len(features)} plugin factor(s) for look-ahead"):
        bars = req.snapshot.load_bars(symbols=plugin_check.check_symbols(rows_per_symbol))
        plugin_check.check_causal(features, bars, options)


def _notice_all_null(names: list[str], reporter: Reporter) -> None:
    if names:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        reporter.notice(
            f"features with no values at all (every row null; e.g. a window longer than the data): {shown}; "
            "use shorter features.windows, more history, or exclude them"
        )


def _symbols(req: _Request) -> list[str]:
    symbols = req.data_filter["symbols"] or list(req.manifest["symbols"])
    bar_store.check_symbols(req.manifest, symbols)
    if not symbols:
        raise DataError(f"dataset {req.dataset!r} has no symbols; ingest bars first")
    return sorted(symbols)


def _rows_per_symbol(req: _Request, symbols: list[str]) -> dict[str, int]:
    per_symbol = req.manifest.get("per_symbol") or {}
    return {s: int(per_symbol.get(s, {}).get("rows", 1)) for s in symbols}


def _bounds(req: _Request) -> tuple[dt.datetime | None, dt.datetime | None]:
    start, end = (req.data_filter[k] for k in ("start", "end"))
    return (dt.datetime.fromisoformat(start) if start else None, dt.datetime.fromisoformat(end) if end else None)


def _spec(req: _Request, stats: build.PartStats, todo: engine.Plan, seconds: float) -> dict[str, Any]:
    section = req.recipe["features"]
    rows = stats.rows
    if rows == 0:
        start, end = req.data_filter["start"], req.data_filter["end"]
        raise DataError(
            f"data.start={start} / data.end={end} select no bars of dataset {req.dataset!r}, "
            f"which spans {req.manifest.get('start')} to {req.manifest.get('end')}; widen the range"
        )
    return {
        "fingerprint": req.folder.name,
        "features": todo.names,
        "skipped": todo.missing,
        "too_short": req.selection.too_short,
        **{key: section.get(key, []) for key in ("sets", "include", "exclude", "windows")},
        "features_section": section,
        "dataset": req.dataset,
        "content_hash": req.manifest["content_hash"],
        "dataset_version": req.snapshot.version,
        "references": _reference_identity(req.references, version=True),
        "feature_code_version": registry.FEATURE_CODE_VERSION,
        "feature_code": code_hash.feature_code_hash(),
        "qfactory_version": __version__,
        "polars_version": pl.__version__,
        **req.data_filter,
        "rows": rows,
        "symbols_count": stats.symbols,
        "null_share": {c: round(stats.nulls.get(c, 0) / rows, 6) for c in todo.names},
        "build_seconds": round(seconds, 3),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def list_versions(data_dir: Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every stored feature version (of one dataset, or of all), oldest first."""
    if dataset is not None:
        bar_store.read_manifest(data_dir, dataset)  # a typo'd dataset is an error, not an empty list
        roots = [features_root(data_dir, dataset)]
    else:
        roots = sorted(p.parent / "features" for p in Path(data_dir).glob(f"*/{bar_store.MANIFEST}"))
    rows = [
        _version_row(p)
        for root in roots
        if root.is_dir()
        for p in root.glob(f"*/{SPEC}")
        if not p.parent.name.startswith(".")
    ]
    return sorted(rows, key=lambda r: (str(r["created"]), r["dataset"], r["fingerprint"]))


def _version_row(spec_path: Path) -> dict[str, Any]:
    spec = read_json(spec_path)
    return {
        "dataset": spec.get("dataset"),
        "fingerprint": spec.get("fingerprint", spec_path.parent.name),
        "created": spec.get("created"),
        "rows": spec.get("rows"),
        "features": len(spec.get("features", [])),
        "build_seconds": spec.get("build_seconds"),
        "path": str(spec_path.parent),
    }


def find_version(data_dir: Path, fingerprint: str, dataset: str | None = None) -> Path:
    """The folder of the version whose fingerprint is (or uniquely starts with) `fingerprint`."""
    rows = list_versions(data_dir, dataset)
    exact = [r for r in rows if r["fingerprint"] == fingerprint]
    matches = exact or [r for r in rows if str(r["fingerprint"]).startswith(fingerprint)]
    if len(matches) == 1:
        return Path(matches[0]["path"])
    where = f"dataset {dataset!r}" if dataset else f"data home {data_dir}"
    if not matches:
        raise DataError(
            f"feature version {fingerprint!r} not found in {where}; list versions with `qfactory features ls`"
        )
    found = ", ".join(f"{r['dataset']}/{r['fingerprint']}" for r in matches[:5])
    raise DataError(
        f"feature version {fingerprint!r} is ambiguous in {where} ({found}); give more characters or --dataset"
    )


def show_version(data_dir: Path, fingerprint: str, dataset: str | None = None) -> dict[str, Any]:
    """The spec of one version (feature list, rows, null share per feature, build time, ...) plus its path."""
    folder = find_version(data_dir, fingerprint, dataset)
    return {**read_json(folder / SPEC), "path": str(folder)}


# ---- references from another dataset (features/references.py) ---------------------------------------


def reference_snapshot(recipe: Recipe, data_dir: Path, snapshot: Any, version: int | None = None) -> Any:
    """The pinned snapshot `features.references` reads when it names another dataset (None when the
    references are the recipe's own dataset's symbols), seen through the main snapshot's price
    adjustment so references are adjusted as every other bar is. `version`: pin that version."""
    home = snapshot.dataset
    refs = References.from_section(recipe["features"].get("references"), home)
    if refs is None or not refs.external:
        return None
    if not bar_store.exists(data_dir, refs.dataset):
        raise DataError(
            f"features.references.dataset: there is no dataset {refs.dataset!r} in data home {data_dir}; "
            f"ingest it first (`qfactory ingest --dataset {refs.dataset} ...`) or drop the key to read the "
            f"references from {home!r}"
        )
    pinned = bar_store.pin(data_dir, refs.dataset, version)
    adjustment = getattr(snapshot, "adjustment", None)
    if adjustment is None:
        return pinned
    from quant_cli.pipeline.adjust import AdjustedSnapshot  # noqa: PLC0415 - the pipeline package imports features

    return AdjustedSnapshot(pinned, adjustment)


def _reference_identity(ref_snapshot: Any, version: bool = False) -> dict[str, Any] | None:
    """What the fingerprint (content) and spec.json (content and version) record of a reference dataset."""
    if ref_snapshot is None:
        return None
    out = {"dataset": ref_snapshot.dataset, "content_hash": ref_snapshot.content_hash}
    return {**out, "version": ref_snapshot.version} if version else out


def _check_references(req: _Request, symbols: list[str]) -> None:
    """Every reference symbol exists in the dataset it is read from; one from another dataset is not
    also a symbol being built (a served request could not tell its two series apart)."""
    refs = References.from_section(req.recipe["features"].get("references"), req.dataset)
    if refs is None:
        return
    manifest = req.references.manifest if req.references is not None else req.manifest
    known = list(manifest["symbols"])
    for group, members in refs.groups:
        unknown = [s for s in members if s not in set(known)]
        if unknown:
            raise DataError(
                f"features.references.{group}: {unknown[0]!r} is not a symbol of dataset {manifest['dataset']!r} "
                f"(it has {len(known)}, e.g. {known[:5]}); ingest it there or remove it from the group"
            )
    own, theirs = req.manifest.get("frequency"), manifest.get("frequency")
    if refs.external and own and theirs and own != theirs:  # a served request checks every symbol's spacing
        raise DataError(
            f"features.references.dataset: dataset {refs.dataset!r} has {theirs} bars but dataset {req.dataset!r} "
            f"has {own} bars; ingest the references at {own} (requests carry both at one frequency)"
        )
    clash = sorted(set(refs.symbols) & set(symbols)) if refs.external else []
    if clash:
        raise DataError(
            f"features.references: {clash[0]!r} is both a symbol of dataset {req.dataset!r} being built and a "
            f"reference from dataset {refs.dataset!r}; leave it out of data.symbols or of the references"
        )
