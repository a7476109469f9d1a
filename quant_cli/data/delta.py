"""The Delta Lake primitives under the bar store: open a version, commit, read commit metadata.

A dataset's bars are one Delta table at `<dataset>/bars/`, partitioned by symbol. Each commit is
one atomic step of the table (`_delta_log/<version>.json` appears or not); the data files of a
commit are written before it, so a writer killed midway leaves only unreferenced files that no
reader sees (and that `qfactory data vacuum` removes). Every commit made by qfactory carries its
own description (operation, source, frequency, content hash, created) in the commit's custom
metadata under "qfactory", so the manifest of any version can be rebuilt from the table alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from quant_cli.errors import DataError
from quant_cli.io import native_stderr_held, parse_json, read_json_bytes, storage_errors

BARS = "bars"
LOG = "_delta_log"
META_KEY = "qfactory"
PARTITION = ["symbol"]


def table_dir(root: Path) -> Path:
    return Path(root) / BARS


def is_table(root: Path) -> bool:
    return (table_dir(root) / LOG).is_dir() and any((table_dir(root) / LOG).glob("*.json"))


def open_table(root: Path, dataset: str, version: int | None = None) -> DeltaTable:
    """The table at `version` (latest when None); DataError naming the versions that exist."""
    try:
        table = DeltaTable(str(table_dir(root)))
    except TableNotFoundError:
        raise DataError(
            f"dataset {dataset!r} has no bars table at {table_dir(root)}; ingest it "
            f"again with `qfactory ingest --dataset {dataset}`"
        ) from None
    except DeltaError as exc:  # a damaged log file (edited, truncated by a full disk)
        raise DataError(
            f"dataset {dataset!r}: its Delta table at {table_dir(root)} cannot be read ({str(exc).splitlines()[0]}); "
            f"restore its {LOG} from a backup, or delete {root} and ingest it again"
        ) from None
    if version is None or version == table.version():
        return table
    latest = table.version()
    if not 0 <= version <= latest:
        raise DataError(
            f"dataset {dataset!r} has no version {version}; it has versions 0 to "
            f"{latest} (see `qfactory data show {dataset}`)"
        )
    try:
        table.load_as_version(version)
    except DeltaError as exc:
        raise DataError(
            f"dataset {dataset!r} version {version} cannot be opened "
            f"({str(exc).splitlines()[0]}); see `qfactory data show {dataset}`"
        ) from None
    return table


def latest_version(root: Path) -> int | None:
    """The newest committed version, read from the log file names (cheap; None without a table)."""
    log = table_dir(root) / LOG
    numbers = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()] if log.is_dir() else []
    return max(numbers) if numbers else None


def missing_files(table: DeltaTable) -> list[str]:
    """Data files of the opened version that are gone (removed by a vacuum)."""
    return [uri for uri in table.file_uris() if not Path(uri).is_file()]


def commit(
    root: Path, bars: pl.DataFrame, meta: dict[str, Any], mode: str, replace_symbols: list[str] | None = None
) -> None:
    """One atomic commit: 'replace' (new table version overwriting all rows), 'append' (adds rows),
    or 'overwrite' of the rows of `replace_symbols` only (delete + insert in one commit)."""
    target = str(table_dir(root))
    props = CommitProperties(custom_metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    arrow = bars.to_arrow()
    if mode == "replace":
        mode_args: dict[str, Any] = (
            {"mode": "overwrite", "schema_mode": "overwrite"} if is_table(root) else {"mode": "error"}
        )
    elif mode == "append":
        mode_args = {"mode": "append", "schema_mode": "merge"}
    else:
        mode_args = {"mode": "overwrite", "schema_mode": "merge", "predicate": symbols_predicate(replace_symbols or [])}
    # A full or read-only disk: deltalake raises its own DeltaError "... (os error 28)" (a StorageError
    # naming the table here), and its Rust writer threads panic on stderr (held back, dropped).
    with storage_errors(target), native_stderr_held():
        write_deltalake(target, arrow, partition_by=PARTITION, commit_properties=props, **mode_args)


def symbols_predicate(symbols: list[str]) -> str:
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sorted(symbols))
    return f"symbol IN ({quoted})"


def commit_info(root: Path, version: int) -> dict[str, Any]:
    """The commitInfo of `version` plus its qfactory metadata (empty when the log entry is gone)."""
    path = table_dir(root) / LOG / f"{version:020d}.json"
    if not path.is_file():
        return {}
    try:  # each line one action, read through the one bounded JSON reader (size and depth caps)
        for line in read_json_bytes(path).splitlines():
            action = parse_json(line) if line.strip() else {}
            if isinstance(action, dict) and isinstance(action.get("commitInfo"), dict):
                info = action["commitInfo"]
                raw = info.get(META_KEY)
                meta = parse_json(raw) if isinstance(raw, str) else {}
                return {**info, META_KEY: meta if isinstance(meta, dict) else {}}
    except ValueError as exc:
        raise DataError(
            f"{path}: the dataset's commit log is damaged (not valid JSON: {exc}); restore the file, "
            "or re-ingest the dataset with `qfactory ingest --mode replace`"
        ) from None
    return {}


def scan(table: DeltaTable) -> pl.LazyFrame:
    """The opened version, lazily; filters on `symbol` prune partitions, on `ts` use file statistics."""
    return pl.scan_delta(table, version=table.version())


def vacuum_candidates(table: DeltaTable) -> list[str]:
    """Files (relative to the table) that the latest version does not reference (also files no commit names)."""
    return list(table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True, full=True))
