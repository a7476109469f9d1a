"""`qfactory ingest` as a library: read a source, make canonical bars, validate, commit to the store.

The source is read and validated without any lock; then, holding the dataset's writer lock
(store.writer), the existing rows are read, the append checks run against them and one atomic
Delta commit is made. Nothing is committed unless every row passed, so a rejected ingest leaves
the table at its version; two concurrent appends are serialised and neither is lost.
Symbol and date filters are not applied here; they are applied when bars are loaded.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data import schema, sources, store
from quant_cli.data.frequency import parse_frequency
from quant_cli.data.schema import LINE, OHLCV, SRC, STRICT, Origin
from quant_cli.data.synthetic import generate
from quant_cli.errors import DataError, one_of, shown, suggest
from quant_cli.report import SILENT, Reporter
from quant_cli.schema import SCHEMA

LAYOUTS = ("auto", "long", "per_symbol", "wide")
FORMATS = ("auto", "csv", "parquet", "sqlite")
MODES = ("replace", "append")
ON_DUPLICATE = ("error", "keep-last")
OPTIONAL_PER_FILE = ("adj_close",)  # Yahoo exports: some symbols' files have 'Adj Close', some do not
_SYNTHETIC_DEFAULTS = {k: v.default for k, v in SCHEMA["data"]["synthetic"].items()}


@dataclass(frozen=True)
class SyntheticParams:
    """Arguments of quant_cli.data.synthetic.generate (defaults: recipe data.synthetic)."""

    symbols: int = _SYNTHETIC_DEFAULTS["symbols"]
    bars: int = _SYNTHETIC_DEFAULTS["bars"]
    frequency: str = _SYNTHETIC_DEFAULTS["frequency"]
    start: str = _SYNTHETIC_DEFAULTS["start"]
    seed: int = 42
    signal: float = _SYNTHETIC_DEFAULTS["signal"]
    sector: bool = _SYNTHETIC_DEFAULTS["sector"]


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest and how. `source` is 'synthetic', a file, a directory, a glob or a .sqlite file."""

    source: str
    dataset: str
    layout: str = "auto"  # auto: long if there is a symbol column, else one file per symbol
    format: str = "auto"  # auto: from each file's extension
    delimiter: str = ","
    query: str | None = None  # SQL for SQLite sources (default: the assets/series schema)
    timezone: str = "UTC"  # of naive timestamps in the source
    mode: str = "replace"  # or "append"
    on_duplicate: str = "error"  # append: overlapping (symbol, ts) rows are an error, or "keep-last"
    frequency: str | None = None  # declared bar frequency; None: inferred from the timestamps
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)


def request_from_recipe(recipe: dict[str, Any], mode: str = "replace") -> IngestRequest:
    """An IngestRequest from a validated recipe's [data] section (data.synthetic.seed defaults to run.seed)."""
    data = recipe["data"]
    synth = {**_SYNTHETIC_DEFAULTS, **data.get("synthetic", {})}
    if synth.get("seed") is None:
        synth["seed"] = recipe.get("run", {}).get("seed", 42)
    return IngestRequest(
        source=data.get("source") or "",
        dataset=data.get("dataset") or "",
        layout=data.get("layout", "auto"),
        format=data.get("format", "auto"),
        delimiter=data.get("delimiter", ","),
        query=data.get("query"),
        timezone=data.get("timezone", "UTC"),
        mode=mode,
        frequency=data.get("frequency"),
        synthetic=SyntheticParams(**synth),
    )


def with_overrides(request: IngestRequest, **values: Any) -> IngestRequest:
    """Replace the fields given as non-None; names of SyntheticParams fields go to `synthetic`.

    For a synthetic source `frequency` is the generator's; for files it declares the bar frequency.
    """
    values = {k: v for k, v in values.items() if v is not None}
    synthetic_names = {f.name for f in dataclasses.fields(SyntheticParams)} - {"frequency"}
    synth = {k: values.pop(k) for k in list(values) if k in synthetic_names}
    if "frequency" in values and values.get("source", request.source) == "synthetic":
        synth["frequency"] = values.pop("frequency")
    return dataclasses.replace(request, **values, synthetic=dataclasses.replace(request.synthetic, **synth))


def ingest(request: IngestRequest, data_dir: Path, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Ingest `request.source` into `<data_dir>/<dataset>`; returns the store manifest."""
    request = _checked(request, data_dir)
    bars, description, frequency = _read_source(request, reporter)
    with store.writer(data_dir, request.dataset, reporter) as writer:
        previous = writer.latest() if request.mode == "append" else None
        if previous is not None:
            return _append(writer, previous, request, bars, description, frequency, reporter)
        return writer.replace(bars, description, frequency)


def _read_source(request: IngestRequest, reporter: Reporter) -> tuple[pl.DataFrame, str, str | None]:
    """(canonical bars, description of the source, declared frequency) of a checked request."""
    if request.source == "synthetic":
        params = request.synthetic
        return _synthetic(params), _describe_synthetic(params), params.frequency
    return read_bars(request, reporter), _describe(request), request.frequency


def ingest_missing(recipe: dict[str, Any], data_dir: Path, reporter: Reporter = SILENT) -> dict[str, Any] | None:
    """The recipe's `[data] source` ingested when its dataset is not in the store yet, so a recipe
    works as the first command on a new machine (`train`, `split`, `features`, `walkforward`, `tune`).

    Never re-ingests an existing dataset (only `qfactory run` and `qfactory ingest` do). The check
    is repeated under the dataset's writer lock, so two commands starting at once on one data home
    ingest it once: the second waits for the lock, then finds the table. Returns the new store
    manifest, or None when nothing was ingested.
    """
    data = recipe["data"]
    if not data.get("source") or store.exists(data_dir, data["dataset"]):
        return None
    request = _checked(request_from_recipe(recipe), data_dir)
    with store.writer(data_dir, request.dataset, reporter) as writer:
        if store.exists(data_dir, request.dataset):
            return None  # another command ingested it while this one waited for the lock
        reporter.notice(
            f"dataset {request.dataset!r} is not in {data_dir} yet: ingesting it from the recipe's "
            f"data.source ({shown(request.source)}) first"
        )
        bars, description, frequency = _read_source(request, reporter)
        return writer.replace(bars, description, frequency)


# ---------------------------------------------------------------- request checks


def _checked(request: IngestRequest, data_dir: Path) -> IngestRequest:
    if not request.source:
        raise DataError(
            "no source to ingest; pass --source (a file, directory, glob, .sqlite "
            "file or 'synthetic') or set data.source"
        )
    if not request.dataset:
        raise DataError("no dataset name; pass --dataset NAME or set data.dataset in the recipe")
    store.dataset_dir(data_dir, request.dataset)  # rejects names like '../x' before any work
    checks = (("--mode", request.mode, MODES), ("--on-duplicate", request.on_duplicate, ON_DUPLICATE))
    for option, value, allowed in checks:
        if value not in allowed:
            raise DataError(f"{option} {value!r} is not one of {one_of(allowed)}{suggest(value, allowed)}")
    if request.frequency is not None:
        parse_frequency(request.frequency)
    return checked_reading(request)


def checked_reading(request: IngestRequest) -> IngestRequest:
    """The options of how a file is read (layout, format, delimiter, query, time zone) checked and
    normalised: what `ingest` and `predict` (which reads every layout ingest reads) share."""
    layout = request.layout.replace("-", "_")
    for option, value, allowed in (("--layout", layout, LAYOUTS), ("--format", request.format, FORMATS)):
        if value not in allowed:
            raise DataError(f"{option} {value!r} is not one of {one_of(allowed)}{suggest(value, allowed)}")
    if request.query is not None and request.source != "synthetic" and request.format not in ("auto", "sqlite"):
        raise DataError("--query reads a SQLite database; drop --query or pass --format sqlite")
    schema.check_timezone(request.timezone)
    return dataclasses.replace(request, layout=layout, delimiter=_delimiter(request.delimiter))


def _delimiter(text: str) -> str:
    value = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(value) != 1 or value in ('"', "\n", "\r"):
        raise DataError(f"--delimiter {text!r} must be one character, e.g. ',' or ';' (use '\\t' for tabs)")
    return value


# ---------------------------------------------------------------- reading


def read_bars(request: IngestRequest, reporter: Reporter = SILENT) -> pl.DataFrame:
    """Canonical, validated bars from a file source (`request` already checked)."""
    files = sources.resolve_files(request.source, request.format)
    if request.query is not None and any(kind != "sqlite" for _, kind in files):
        raise DataError(
            f"--query reads a SQLite database but {files[0][0]} is not one; drop --query or pass a .sqlite file"
        )
    if any(kind == "sqlite" for _, kind in files) and len(files) > 1:
        raise DataError(
            f"source {request.source!r} names {len(files)} files; a SQLite source must be a single database file"
        )
    frames, origins, unnamed = [], [], 0
    for index, (path, kind) in enumerate(files):
        raw = _read_one(path, kind, request)
        df, blank = _shape(raw, request)
        frames.append(df.with_columns(pl.lit(index, pl.UInt32).alias(SRC)))
        origins.append(raw.origin)
        unnamed += len(blank)
    if unnamed:
        reporter.notice(f"dropped {unnamed} column(s) without a header name (e.g. a saved row index)")
    _check_same_strict(frames, origins)
    absent = _lacking(frames, OPTIONAL_PER_FILE)
    bars = _coerce_all(frames, origins, request.timezone, reporter)
    schema.validate(bars, origins, absent)
    _notice_absent(bars, absent, origins, reporter)
    bars, unsorted = schema.finalize(bars)
    if unsorted:
        reporter.notice(f"{request.source}: rows not in time order; sorted by (symbol, ts)")
    return bars


def _coerce_all(frames: list[pl.DataFrame], origins: list[Origin], timezone: str, reporter: Reporter) -> pl.DataFrame:
    """Type all files at once per group of same-typed files: thousands of per-symbol files stay fast."""
    parts, not_numeric = [], Counter()
    for group in _same_types(frames):
        part, dropped = schema.coerce(pl.concat(group, how="diagonal"), origins, timezone)
        parts.append(part)
        not_numeric.update(dropped)
    for name in not_numeric:
        reporter.notice(f"column {name!r} is not numeric; dropped (only numeric extra columns are kept)")
    bars = pl.concat(parts, how="diagonal_relaxed")
    # Back to input order, so that validation names the first bad row of the first bad file.
    return bars.sort(SRC, LINE) if len(parts) > 1 else bars


def _read_one(path: Path, kind: str, request: IngestRequest) -> sources.RawFrame:
    if kind == "csv":
        return sources.read_csv(path, request.delimiter)
    if kind == "parquet":
        return sources.read_parquet(path)
    return sources.read_sqlite(path, request.query)


def _shape(raw: sources.RawFrame, request: IngestRequest) -> tuple[pl.DataFrame, list[str]]:
    """One file as long bars with canonical column names (values still as read)."""
    if request.layout == "wide":
        return _unpivot_wide(raw), []
    df, blank = schema.rename_to_canonical(raw.df, raw.origin)
    long = request.layout == "long" or (request.layout == "auto" and "symbol" in df.columns)
    if not long:  # one file per symbol: the file name is the symbol
        df = df.drop("symbol", strict=False).with_columns(pl.lit(raw.stem).alias("symbol"))
    schema.require_columns(df, raw.origin, need_symbol=long)
    return df, blank


def _same_types(frames: list[pl.DataFrame]) -> list[list[pl.DataFrame]]:
    """Frames grouped so that shared columns have one dtype (all-text CSV/SQLite frames form one group)."""
    groups: dict[Any, list[pl.DataFrame]] = {}
    for df in frames:
        dtypes = {name: dtype for name, dtype in df.schema.items() if name not in (SRC, LINE)}
        key = (
            "text"
            if all(d == pl.String for d in dtypes.values())
            else tuple(sorted((n, str(d)) for n, d in dtypes.items()))
        )
        groups.setdefault(key, []).append(df)
    return list(groups.values())


def _unpivot_wide(raw: sources.RawFrame) -> pl.DataFrame:
    """Date column + one close column per symbol -> (ts, symbol, close); blank cells are no bar."""
    df, origin = raw.df, raw.origin
    columns = [c for c in df.columns if c != LINE]
    ts = schema.find_ts_column(columns) or columns[0]  # e.g. a pandas index saved without a name
    origin.names["ts"], origin.wide = ts, True
    symbols = [c for c in df.columns if c not in (ts, LINE)]
    if not symbols:
        raise DataError(
            f"{origin.header}: a wide file needs a date column and one column per symbol; found only {ts!r}"
        )
    numeric = all(df.schema[c].is_numeric() for c in symbols)
    df = df.with_columns(pl.col(symbols).cast(pl.Float64 if numeric else pl.String)).rename({ts: "ts"})
    long = df.unpivot(index=["ts", LINE], on=symbols, variable_name="symbol", value_name="close")
    # A blank (or NaN, as pandas writes it) cell means the symbol has no bar at that date.
    is_nan = schema.to_float(long["close"]).is_nan().fill_null(False)
    return long.filter(schema.present(long["close"]) & ~is_nan)


def _lacking(frames: list[pl.DataFrame], columns: tuple[str, ...]) -> dict[str, list[int]]:
    """For each column some files have: the files (`__src`) that do not, when there are any."""
    out = {}
    for col in columns:
        having = [i for i, f in enumerate(frames) if col in f.columns]
        if having and len(having) < len(frames):
            out[col] = [i for i, f in enumerate(frames) if col not in f.columns]
    return out


def _notice_absent(bars: pl.DataFrame, absent: dict[str, list[int]], origins: list[Origin], reporter: Reporter) -> None:
    """One notice per column that whole files lack, naming the symbols left without it."""
    for col, files in absent.items():
        symbols = bars.filter(pl.col(SRC).is_in(files))["symbol"].unique().sort().to_list()
        shown = ", ".join(symbols[:20]) + (f" and {len(symbols) - 20} more" if len(symbols) > 20 else "")
        reporter.notice(
            f"{len(files)} file(s) have no {col!r} column (e.g. {origins[files[0]].label}): {col} is null for "
            f"{len(symbols)} symbol(s): {shown}; their prices are used as they are (not adjusted)"
        )


def _check_same_strict(frames: list[pl.DataFrame], origins: list[Origin]) -> None:
    """OHLCV must be in every file or in none (adj_close and other extras may be missing from some)."""
    for col in (c for c in STRICT if c not in OPTIONAL_PER_FILE):
        having = [i for i, f in enumerate(frames) if col in f.columns]
        if having and len(having) < len(frames):
            lacking = next(i for i, f in enumerate(frames) if col not in f.columns)
            raise DataError(
                f"{origins[lacking].header}: no {col!r} column, but {origins[having[0]].label} has one; "
                f"add {col!r} to every file, or remove it from all of them"
            )


# ---------------------------------------------------------------- synthetic


# The flags bypass the recipe's key bounds, so they are checked here against the same keys; the
# product is capped too: each bound alone still allows a panel no machine can hold (MemoryError).
_SYNTHETIC_BOUNDS = {
    "symbols": ("data.synthetic.symbols", SCHEMA["data"]["synthetic"]["symbols"]),
    "bars": ("data.synthetic.bars", SCHEMA["data"]["synthetic"]["bars"]),
    "seed": ("run.seed", SCHEMA["run"]["seed"]),
    "signal": ("data.synthetic.signal", SCHEMA["data"]["synthetic"]["signal"]),
}
MAX_SYNTHETIC_BARS = 50_000_000


def _check_synthetic_bounds(params: SyntheticParams) -> None:
    for name, (key_name, key) in _SYNTHETIC_BOUNDS.items():
        value = getattr(params, name)
        if not key.minimum <= value <= key.maximum:  # also False for nan
            raise DataError(f"--{name} {value}: must be between {key.minimum} and {key.maximum} ({key_name})")
    total = params.symbols * params.bars
    if total > MAX_SYNTHETIC_BARS:
        raise DataError(
            f"--symbols {params.symbols} x --bars {params.bars} = {total:,} bars is more than a synthetic panel "
            f"may hold ({MAX_SYNTHETIC_BARS:,}); pass fewer symbols or bars"
        )


def _synthetic(params: SyntheticParams) -> pl.DataFrame:
    _check_synthetic_bounds(params)
    parse_frequency(params.frequency)
    try:
        np.datetime64(params.start, "us")
    except ValueError:
        raise DataError(f"--start {params.start!r} is not an ISO date such as '2015-01-02'") from None
    return generate(
        params.symbols, params.bars, params.frequency, params.start, params.seed, params.signal, params.sector
    )


def _describe_synthetic(p: SyntheticParams) -> str:
    return (
        f"synthetic(symbols={p.symbols}, bars={p.bars}, frequency={p.frequency}, "
        f"start={p.start}, seed={p.seed}, signal={p.signal}{', sector=true' if p.sector else ''})"
    )


def _describe(request: IngestRequest) -> str:
    extra = f", query={request.query!r}" if request.query else ""
    return f"{request.source} (layout={request.layout}, format={request.format}, timezone={request.timezone}{extra})"


# ---------------------------------------------------------------- append


def _append(
    writer: store.Writer,
    previous: store.Snapshot,
    request: IngestRequest,
    new: pl.DataFrame,
    description: str,
    frequency: str | None,
    reporter: Reporter,
) -> dict[str, Any]:
    """Commit `new` after the existing rows; overlapping (symbol, ts) rows are an error unless keep-last.

    Only the partitions of the symbols in `new` are read: the others cannot overlap.
    """
    stored = previous.manifest["schema"]
    old_cols, new_cols = [c for c in OHLCV if c in stored], [c for c in OHLCV if c in new.columns]
    if old_cols != new_cols:
        raise DataError(
            f"{request.source}: has columns {new_cols} but dataset {request.dataset!r} has {old_cols}; "
            "append bars with the same price/volume columns, or pass --mode replace"
        )
    source = previous.manifest.get("source") or ""
    _check_same_extras(list(stored), new.columns, request, source)
    touched = sorted(set(new["symbol"].unique().to_list()) & set(previous.manifest["symbols"]))
    old = previous.load_bars(symbols=touched) if touched else new.clear()
    overlap = new.join(old, on=["symbol", "ts"], how="semi")
    if overlap.height and request.on_duplicate == "error":
        first = overlap.row(0, named=True)
        raise DataError(
            f"{request.source}: {overlap.height} bar(s) already in dataset "
            f"{request.dataset!r}, first symbol {first['symbol']!r} at "
            f"{first['ts'].isoformat()}; pass --on-duplicate keep-last to replace "
            "them with the new rows, or --mode replace"
        )
    if overlap.height:
        reporter.notice(f"{overlap.height} existing bar(s) replaced by the new rows (--on-duplicate keep-last)")
    kept = old.join(new, on=["symbol", "ts"], how="anti")
    merged, _ = schema.finalize(pl.concat([kept, new], how="diagonal_relaxed"))
    combined = source if description in source else f"{source} + {description}"
    return writer.append(previous, new, merged, combined, frequency, replaced=overlap.height > 0)


def _check_same_extras(old: list[str], new: list[str], request: IngestRequest, previous: str) -> None:
    """adj_close (like OHLCV) must be on every bar: in both the dataset and the appended bars, or in neither."""
    stored = f"dataset {request.dataset!r} (from {_source_files(previous)})"
    for col in (c for c in STRICT if c not in OHLCV):
        if col in old and col not in new:
            raise DataError(
                f"{request.source}: no {col!r} column, but {stored} has one; add {col!r} "
                f"to {request.source}, or pass --mode replace"
            )
        if col in new and col not in old:
            raise DataError(
                f"{request.source}: column {col!r} is not in {stored}; drop it from "
                f"{request.source}, or pass --mode replace"
            )


def _source_files(description: str) -> str:
    """'a.csv (layout=auto, ...) + b.csv (layout=...)' -> 'a.csv + b.csv', as the user named them."""
    return " + ".join(part.split(" (layout=")[0] for part in description.split(" + ")) or "an earlier ingest"
