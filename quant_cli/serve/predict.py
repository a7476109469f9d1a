"""Batch predict (`qfactory predict`): a bundle's scores for bars from a file or a stored dataset.

Files go through the ingest reader and validation (data/ingest.py::read_bars), so a bad bar is the
same one-line error ingest gives; a dataset name reads the store's latest version. Features are
computed with the bundle's pipeline (serve/loaded.py), the same path as the server's.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.data import store
from quant_cli.data.ingest import IngestRequest, checked_reading, read_bars
from quant_cli.errors import DataError
from quant_cli.io import write_parquet_atomic, write_text_atomic
from quant_cli.report import SILENT, Reporter
from quant_cli.serve.bundle import load

OUTPUT_FORMATS = (".parquet", ".csv")


def read_source(
    source: str, data_dir: Path, reporter: Reporter = SILENT, reading: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Canonical, validated bars from a file (or folder, or glob) in any layout `ingest` reads, or a
    dataset name. `reading`: IngestRequest's options of how to read (layout, format, delimiter,
    query, timezone); None ones take ingest's defaults."""
    if Path(source).expanduser().exists() or glob.has_magic(source):
        options = {k: v for k, v in (reading or {}).items() if v is not None}
        return read_bars(checked_reading(IngestRequest(source=source, dataset="predict", **options)), reporter)
    try:
        stored = store.exists(data_dir, source)
    except DataError:
        stored = False
    if not stored:
        raise DataError(
            f"--source {source!r}: no such file, and no dataset of that name under {data_dir}; "
            "pass a CSV or parquet file, or the name of an ingested dataset"
        )
    given = [k for k, v in (reading or {}).items() if v is not None]
    if given:
        raise DataError(
            f"--{given[0]} says how to read a file, but --source {source!r} is a stored dataset (already "
            f"canonical bars); drop --{given[0]}"
        )
    return store.pin(data_dir, source).load_bars()


def write_scores(out: Path, scores: pl.DataFrame) -> None:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise DataError(f"--out {out}: unknown output format {out.suffix!r}; end the file name in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        write_parquet_atomic(out, scores)
    else:
        write_text_atomic(out, scores.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")).write_csv())


def predict(
    bundle: Path,
    source: str,
    out: Path,
    data_dir: Path,
    every_bar: bool = False,
    trust_pickle: bool = False,
    reporter: Reporter = SILENT,
    reading: dict[str, Any] | None = None,
    trust_plugins: bool = False,
) -> dict[str, Any]:
    """Score `source` (read as `reading` says: see read_source) with `bundle` into `out`
    (symbol, ts, score[, p_<class>...])."""
    if out.suffix.lower() not in OUTPUT_FORMATS:
        write_scores(out, pl.DataFrame())  # the one-line format error, before any work
    loaded = load(bundle, trust_pickle, trust_plugins)
    bars = read_source(source, data_dir, reporter, reading)
    with reporter.working(f"predict: features and scores for {bars['symbol'].n_unique()} symbol(s)"):
        scores = loaded.score_bars(bars, every_bar)
    write_scores(out, scores)
    reporter.info(
        f"predict: {scores.height:,} score(s) for {scores['symbol'].n_unique()} "
        f"symbol(s) with bundle {loaded.bundle_id}"
    )
    return {"bundle_id": loaded.bundle_id, "rows": scores.height, "symbols": scores["symbol"].n_unique()}
