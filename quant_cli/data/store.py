"""The bar store (DESIGN.md §2): one Delta Lake table per dataset, pinned reads, one writer at a time.

Layout of `<data_dir>/<dataset>/`:
    bars/              the Delta table (partitioned by symbol; `_delta_log/` holds the commits)
    versions/<N>.json  the manifest of table version N (data/manifest.py)
    manifest.json      the latest manifest, for people and scripts
    .writer.lock       the per-dataset writer lock (filelock)

Readers `pin` one table version when a command starts and read only that version through the
returned `Snapshot`, whatever is committed meanwhile; they never take the lock, so a reader
never waits for a writer. Writers (`writer()`) hold the lock for read-existing → validate →
commit, so concurrent appends are serialised and none is lost. A commit is atomic and is made
only after the new bars passed every check, so a rejected or interrupted ingest leaves the table
at the version it had. Replace = a new version overwriting every row; append = a commit adding
rows (or, when appended rows replace existing ones, one commit rewriting those symbols' rows).
Old versions stay readable until `qfactory data vacuum` removes their files.
Datasets in the pre-Delta layout are converted on their first write (data/legacy.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock, Timeout

from quant_cli.data import delta, legacy
from quant_cli.data import manifest as manifests
from quant_cli.errors import DataError
from quant_cli.report import SILENT, Reporter

MANIFEST = manifests.MANIFEST
LOCK = ".writer.lock"


def dataset_dir(data_dir: Path, dataset: str) -> Path:
    if not dataset or "/" in dataset or "\\" in dataset or dataset.startswith("."):
        raise DataError(f"--dataset {dataset!r}: use a plain name such as 'daily' (no slashes, not starting with '.')")
    return Path(data_dir) / dataset


def check_symbols(manifest: dict[str, Any], symbols: list[str]) -> None:
    """DataError naming the requested symbols the dataset does not have."""
    unknown = sorted(set(symbols) - set(manifest["symbols"]))
    if unknown:
        known = manifest["symbols"]
        raise DataError(
            f"data.symbols: {unknown[:5]} not in dataset {manifest['dataset']!r}; it "
            f"has {len(known)} symbols, e.g. {known[:5]}"
        )


def parse_time(value: str | dt.datetime, name: str) -> dt.datetime:
    """An ISO date or datetime; naive values are taken as UTC."""
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise DataError(
                f"{name} {value!r} is not an ISO date or datetime, e.g. '2020-01-31' or '2020-01-31T15:30:00'"
            ) from None
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc)


# ---------------------------------------------------------------- pinned reads


@dataclass(frozen=True)
class Snapshot:
    """One pinned version of a dataset. A command pins once when it starts and reads only this.

    `version` is the Delta table version; `manifest` is the manifest of that version (schema,
    symbols, per-symbol ranges, frequency, content hash).
    """

    data_dir: Path
    dataset: str
    version: int
    manifest: dict[str, Any]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def load_bars(
        self,
        symbols: list[str] | None = None,
        start: str | dt.datetime | None = None,
        end: str | dt.datetime | None = None,
    ) -> pl.DataFrame:
        """Bars of this version, sorted by (symbol, ts); a few symbols read only their partitions."""
        if symbols:
            check_symbols(self.manifest, symbols)
        table = delta.open_table(dataset_dir(self.data_dir, self.dataset), self.dataset, self.version)
        lazy = delta.scan(table)
        if symbols:
            lazy = lazy.filter(pl.col("symbol").is_in(list(dict.fromkeys(symbols))))
        if start is not None:
            lazy = lazy.filter(pl.col("ts") >= parse_time(start, "data.start"))
        if end is not None:
            lazy = lazy.filter(pl.col("ts") <= parse_time(end, "data.end"))
        return _in_order(lazy.select(list(self.manifest["schema"])).collect())


def _in_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Sorted by (symbol, ts). A scan returns each file's rows together, files in no set order, and
    one file is sorted by ts: putting the symbol blocks in order is 2-3x cheaper than a full sort."""
    if frame.height == 0:
        return frame
    parts = frame.partition_by("symbol", as_dict=True, maintain_order=True)
    out = pl.concat([parts[key] for key in sorted(parts)], rechunk=True) if len(parts) > 1 else frame
    step = (pl.col("symbol") != pl.col("symbol").shift(1)) | (pl.col("ts") > pl.col("ts").shift(1))
    in_order = bool(out.select(step.fill_null(True).all()).item())
    return out if in_order else out.sort("symbol", "ts")  # e.g. a symbol spread over several appended files


def pin(data_dir: Path, dataset: str, version: int | None = None) -> Snapshot:
    """The dataset's latest version, or `version` (to continue a run on the data it started on)."""
    root = dataset_dir(data_dir, dataset)
    _check_readable(root, dataset, Path(data_dir))
    table = delta.open_table(root, dataset, version)
    if version is not None and delta.missing_files(table):
        raise DataError(
            f"dataset {dataset!r} version {version} was vacuumed (its files were removed); "
            f"use a version that `qfactory data show {dataset}` lists as available, or re-ingest"
        )
    return Snapshot(Path(data_dir), dataset, table.version(), manifests.version_manifest(root, dataset, table))


def _check_readable(root: Path, dataset: str, data_dir: Path) -> None:
    if legacy.is_legacy(root):
        raise DataError(legacy.convert_hint(dataset))
    if not delta.is_table(root) and legacy.moved_bars(root):
        raise DataError(
            f"dataset {dataset!r}: an interrupted write of the old store left its "
            f"bars in {legacy.moved_bars(root)[-1].name}; "
            f"restore and convert them with `qfactory data convert {dataset}`"
        )
    if not delta.is_table(root):
        raise DataError(
            f"dataset {dataset!r} not found in {data_dir}; create it with `qfactory "
            f"ingest --source ... --dataset {dataset}`"
        )


def read_manifest(data_dir: Path, dataset: str) -> dict[str, Any]:
    """The latest version's manifest."""
    return pin(data_dir, dataset).manifest


def exists(data_dir: Path, dataset: str) -> bool:
    root = dataset_dir(data_dir, dataset)
    return delta.is_table(root) or legacy.is_legacy(root) or bool(root.is_dir() and legacy.moved_bars(root))


def load_bars(
    data_dir: Path,
    dataset: str,
    symbols: list[str] | None = None,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
) -> pl.DataFrame:
    """Canonical bars of the latest version, sorted by (symbol, ts), optionally filtered."""
    return pin(data_dir, dataset).load_bars(symbols=symbols, start=start, end=end)


# ---------------------------------------------------------------- writes


@contextmanager
def writer(data_dir: Path, dataset: str, reporter: Reporter = SILENT) -> Iterator[Writer]:
    """Hold the dataset's writer lock; tidy leftovers of dead writers and convert an old layout first."""
    root = dataset_dir(data_dir, dataset)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root, dataset, reporter):
        legacy.recover_and_clean(root, reporter)
        w = Writer(Path(data_dir), dataset, root)
        if legacy.is_legacy(root):
            w.convert(reporter)
        elif legacy.has_leftover_legacy_files(root):
            legacy.remove_legacy_files(root)  # a conversion was killed after its commit
        yield w


@contextmanager
def _locked(root: Path, dataset: str, reporter: Reporter) -> Iterator[None]:
    """The writer lock; says so when another writer holds it. The OS releases it if its holder dies."""
    lock = FileLock(str(root / LOCK))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        reporter.info(f"waiting for another write to dataset {dataset!r} to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class Writer:
    """Commits to one dataset; only obtained from `writer()`, which holds the lock."""

    data_dir: Path
    dataset: str
    root: Path

    def latest(self) -> Snapshot | None:
        return pin(self.data_dir, self.dataset) if delta.is_table(self.root) else None

    def replace(
        self,
        bars: pl.DataFrame,
        source: str,
        frequency: str | None = None,
        operation: str = "replace",
        created: str | None = None,
    ) -> dict[str, Any]:
        """A new version holding exactly `bars` (validated, canonical)."""
        previous = self.latest()
        if previous is None:
            _clear_stale_versions(self.root)
        hashes = manifests.symbol_hashes(bars)
        stats = manifests.frame_stats(bars)
        frequency = manifests.frequency_of(frequency, None, bars)
        created = created or (previous.manifest.get("created") if previous else None) or manifests.now()
        return self._commit(bars, _schema(bars), stats, hashes, operation, source, frequency, created, "replace")

    def append(
        self,
        previous: Snapshot,
        new: pl.DataFrame,
        touched: pl.DataFrame,
        source: str,
        frequency: str | None,
        replaced: bool,
    ) -> dict[str, Any]:
        """Add `new` to `previous` (the latest version, pinned under this lock).

        `touched` is the full resulting rows of every symbol in `new` (old rows kept + new rows);
        with `replaced` (keep-last replaced existing bars) it is written over those symbols' rows
        in one commit, else only `new` is appended.
        """
        old = previous.manifest
        schema = _merged_schema(old["schema"], _schema(new), source, self.dataset)
        hashes = {**old.get("symbol_hashes", {}), **manifests.symbol_hashes(touched)}
        stats = {**old["per_symbol"], **manifests.frame_stats(touched)}
        frequency = manifests.frequency_of(frequency, old, touched)
        mode = "overwrite" if replaced else "append"
        data = touched if replaced else new
        return self._commit(
            data,
            schema,
            stats,
            hashes,
            "append",
            source,
            frequency,
            old.get("created"),
            mode,
            replace_symbols=sorted(touched["symbol"].unique().to_list()),
        )

    def convert(self, reporter: Reporter = SILENT) -> dict[str, Any]:
        """Old parquet layout → table version 0, then the old files go (data/legacy.py)."""
        bars, old = legacy.read_legacy(self.root)
        if not bars.height:
            raise DataError(
                f"dataset {self.dataset!r}: the old-layout store at {self.root} holds no "
                "bars; re-ingest it with --mode replace"
            )
        result = self.replace(bars, old.get("source", "converted"), old.get("frequency"), "convert", old.get("created"))
        legacy.remove_legacy_files(self.root)
        reporter.notice(
            f"dataset {self.dataset!r} converted from the old parquet layout to a "
            f"Delta table (version {result['table_version']})"
        )
        return result

    def _commit(
        self,
        data: pl.DataFrame,
        schema: dict[str, str],
        stats: dict,
        hashes: dict,
        operation: str,
        source: str,
        frequency: str | None,
        created: str | None,
        mode: str,
        replace_symbols: list[str] | None = None,
    ) -> dict[str, Any]:
        content = manifests.content_hash(schema, hashes)
        meta = {
            "operation": operation,
            "source": source,
            "frequency": frequency,
            "content_hash": content,
            "created": created,
        }
        delta.commit(self.root, data, meta, mode, replace_symbols)
        version = delta.latest_version(self.root)
        info = delta.commit_info(self.root, version)
        updated = manifests.from_millis(info["timestamp"]) if info.get("timestamp") else manifests.now()
        manifest = manifests.build(self.dataset, version, schema, stats, hashes, meta, updated)
        manifests.write_version(self.root, manifest)
        return manifest


def write_store(
    data_dir: Path, dataset: str, bars: pl.DataFrame, source: str, frequency: str | None = None
) -> dict[str, Any]:
    """Replace the dataset's bars with `bars` (already validated and canonical) in one commit."""
    with writer(data_dir, dataset) as w:
        return w.replace(bars, source, frequency)


def _schema(bars: pl.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in bars.schema.items()}


def _merged_schema(old: dict[str, str], new: dict[str, str], source: str, dataset: str) -> dict[str, str]:
    """The table's columns after an append; a column cannot change its type."""
    for name in old.keys() & new.keys():
        if old[name] != new[name]:
            raise DataError(
                f"{source}: column {name!r} holds {new[name]} but dataset {dataset!r} stores {old[name]}; "
                "convert the column, or pass --mode replace"
            )
    return manifests.canonical_schema({**old, **new})


def _clear_stale_versions(root: Path) -> None:
    """A new table starts at version 0: manifests of a deleted earlier table must not answer for it."""
    folder = Path(root) / manifests.VERSIONS
    if folder.is_dir():
        for path in folder.glob("*.json"):
            path.unlink(missing_ok=True)
