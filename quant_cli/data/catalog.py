"""`qfactory data` as a library: list datasets and their versions, vacuum old versions, convert.

Vacuum keeps the newest `keep` versions plus every version a run references (the run manifests
`<runs_dir>/*/manifest.json` record `"dataset": {"name", "version", "content_hash"}`), and
deletes the data files that only other versions (or no version: leftovers of killed writers)
use. It holds the writer lock, so it never deletes the files of a commit in progress. A run
still in progress records its version when its stage commits; vacuum while a run is running
only on versions older than `keep` can cover.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quant_cli.data import delta, legacy, store
from quant_cli.data import manifest as manifests
from quant_cli.errors import DataError
from quant_cli.io import read_json
from quant_cli.report import SILENT, Reporter


def list_datasets(data_dir: Path) -> list[dict[str, Any]]:
    """One row per dataset in the data home: latest version, rows, symbols, range, updated, source."""
    home = Path(data_dir)
    names = sorted(p.name for p in home.iterdir() if p.is_dir() and not p.name.startswith(".")) if home.is_dir() else []
    rows = []
    for name in names:
        root = home / name
        if legacy.is_legacy(root):
            rows.append({"dataset": name, "version": None, "layout": "old (run `qfactory data convert " + name + "`)"})
        elif delta.is_table(root):
            m = store.pin(home, name).manifest
            rows.append(
                {
                    "dataset": name,
                    "version": m["table_version"],
                    "rows": m["rows"],
                    "symbols": len(m["symbols"]),
                    "start": m["start"],
                    "end": m["end"],
                    "updated": m["updated"],
                    "source": m["source"],
                    "layout": "delta",
                }
            )
    return rows


def dataset_versions(data_dir: Path, dataset: str) -> list[dict[str, Any]]:
    """Every table version, oldest first, with whether its files are still there (not vacuumed)."""
    root = store.dataset_dir(data_dir, dataset)
    latest = store.pin(data_dir, dataset).version  # a missing or old-layout dataset fails here, one line
    return [_version_row(root, dataset, v) for v in range(latest + 1)]


def _version_row(root: Path, dataset: str, version: int) -> dict[str, Any]:
    try:
        table = delta.open_table(root, dataset, version)
    except DataError:  # its log entry was cleaned up (delta log retention): listed, not readable
        table = None
    available = table is not None and not delta.missing_files(table)
    path = manifests.version_path(root, version)
    if path.is_file():
        m = read_json(path)
    elif available:
        m = manifests.version_manifest(root, dataset, table)
    else:  # vacuumed before its manifest was cached: what the commit itself recorded
        info = delta.commit_info(root, version)
        meta = info.get(delta.META_KEY, {})
        m = {"updated": manifests.from_millis(info["timestamp"]) if info.get("timestamp") else None, **meta}
    return {
        "version": version,
        "when": m.get("updated"),
        "operation": m.get("operation"),
        "rows": m.get("rows"),
        "symbols": len(m["symbols"]) if "symbols" in m else None,
        "start": m.get("start"),
        "end": m.get("end"),
        "source": m.get("source"),
        "content_hash": m.get("content_hash"),
        "available": available,
    }


def referenced_versions(runs_dir: Path | None, dataset: str) -> set[int]:
    """Table versions of `dataset` that run manifests under `runs_dir` pin."""
    found: set[int] = set()
    if runs_dir is None or not Path(runs_dir).is_dir():
        return found
    for path in Path(runs_dir).glob(f"*/{manifests.MANIFEST}"):
        try:
            manifest = read_json(path)
        except (OSError, ValueError):
            continue
        pinned = manifest.get("dataset") if isinstance(manifest, dict) else None
        if isinstance(pinned, dict) and pinned.get("name") == dataset and isinstance(pinned.get("version"), int):
            found.add(pinned["version"])
    return found


def vacuum(
    data_dir: Path,
    dataset: str,
    keep: int = 1,
    runs_dir: Path | None = None,
    dry_run: bool = False,
    reporter: Reporter = SILENT,
) -> dict[str, Any]:
    """Delete files no kept version uses; returns what was (or would be) removed."""
    if keep < 1:
        raise DataError(f"--keep {keep}: keep at least the latest version (--keep 1 or more)")
    with store.writer(data_dir, dataset, reporter) as w:
        latest = store.pin(data_dir, dataset).version
        referenced = {v for v in referenced_versions(runs_dir, dataset) if v <= latest}
        wanted = sorted(set(range(max(0, latest - keep + 1), latest + 1)) | referenced)
        files = {v: _files_if_available(w.root, dataset, v) for v in wanted}
        kept = [v for v in wanted if files[v]]  # a version vacuumed earlier is not "kept" now
        bars = delta.table_dir(w.root)
        needed = {Path(uri).resolve() for v in kept for uri in files[v]}
        candidates = [bars / rel for rel in delta.vacuum_candidates(delta.open_table(w.root, dataset))]
        doomed = [p for p in candidates if p.resolve() not in needed and p.is_file()]
        size = sum(p.stat().st_size for p in doomed)
        if not dry_run:
            for path in doomed:
                path.unlink(missing_ok=True)
    gone = [r["version"] for r in dataset_versions(data_dir, dataset) if not r["available"]] if not dry_run else []
    return {
        "dataset": dataset,
        "latest": latest,
        "kept_versions": kept,
        "referenced_by_runs": sorted(referenced),
        "removed_files": len(doomed),
        "removed_bytes": size,
        "unavailable_versions": gone,
        "dry_run": dry_run,
    }


def _files_if_available(root: Path, dataset: str, version: int) -> list[str]:
    try:
        table = delta.open_table(root, dataset, version)
    except DataError:
        return []
    return [] if delta.missing_files(table) else table.file_uris()


def convert(data_dir: Path, dataset: str, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Convert an old-layout dataset in place (a Delta dataset is left as it is)."""
    root = store.dataset_dir(data_dir, dataset)
    if not store.exists(data_dir, dataset):
        raise DataError(f"dataset {dataset!r} not found in {data_dir}; `qfactory data ls` lists the datasets")
    was_legacy = legacy.is_legacy(root)
    with store.writer(data_dir, dataset, reporter):
        pass  # taking the writer converts an old layout (store.writer)
    manifest = store.pin(data_dir, dataset).manifest
    if not was_legacy:
        reporter.info(
            f"dataset {dataset!r} is already a Delta table (version {manifest['table_version']}); nothing to convert"
        )
    return {"dataset": dataset, "converted": was_legacy, "version": manifest["table_version"], "rows": manifest["rows"]}
