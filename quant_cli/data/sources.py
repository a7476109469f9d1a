"""Readers for the ingest sources: CSV, parquet and SQLite files, found from a path/dir/glob.

Each reader returns the table as the user wrote it (CSV: every column as text, so that we, not
the CSV parser, decide what a bad value is and where it is) plus a `__line` column, wrapped in
a `RawFrame` with the `Origin` used to phrase errors.
"""

from __future__ import annotations

import glob
import io
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quant_cli.data.schema import LINE, Origin
from quant_cli.errors import DataError

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
    ".db": "sqlite",
}
_DIRECTORY_FORMATS = ("csv", "parquet")  # a directory means its CSV and parquet files
_DELIMITERS = (",", ";", "\t", "|")
_SQL_BATCH = 100_000


@dataclass
class RawFrame:
    df: pl.DataFrame
    origin: Origin
    stem: str  # the file name without extension: the symbol of a one-file-per-symbol layout


def resolve_files(source: str, fmt: str) -> list[tuple[Path, str]]:
    """The files a source names, each with its format ('csv', 'parquet' or 'sqlite')."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _wanted(p, fmt))
        if not files:
            kinds = fmt if fmt != "auto" else "csv or parquet"
            raise DataError(
                f"source directory {source!r} has no {kinds} files; put *.csv or "
                "*.parquet files in it, or pass a file or a glob"
            )
    elif path.is_file():
        files = [path]
    elif glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(
                f"source {source!r}: no files match this pattern; check the path (quote "
                "the glob so the shell does not expand it)"
            )
    else:
        raise DataError(f"source {source!r} not found; pass an existing file, directory or glob, or 'synthetic'")
    return [(p, _format_of(p, fmt)) for p in files]


def _wanted(path: Path, fmt: str) -> bool:
    kind = EXTENSIONS.get(path.suffix.lower())
    return kind == fmt if fmt != "auto" else kind in _DIRECTORY_FORMATS


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; pass --format csv, parquet or sqlite"
        )
    return kind


# ---------------------------------------------------------------- CSV


_SNIFF_BYTES = 8192


def check_not_binary(path: Path) -> None:
    """Refuse binary input from its first block, before reading the whole file into memory."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        offset = head.index(b"\x00")
        hint = " (UTF-16 text? re-save it as UTF-8)" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(
            f"{path}: binary data, not CSV text (a NUL byte at offset {offset}){hint}; "
            "pass a CSV, parquet or SQLite file (--format tells a misnamed one)"
        )


def read_csv(path: Path, delimiter: str) -> RawFrame:
    check_not_binary(path)
    data = path.read_bytes()
    origin = Origin(str(path), "line")
    if not data.strip():
        raise DataError(f"{path}: the file is empty; export the bars again (a header line, then one line per bar)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark (Excel) is not part of the first column name
    _check_utf8(path, data, delimiter)
    _check_delimiter(path, data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r"), delimiter)
    try:
        df = pl.read_csv(io.BytesIO(data), separator=delimiter, infer_schema=False, raise_if_empty=True)
    except pl.exceptions.NoDataError:
        raise DataError(
            f"{path}: the file is empty; export the bars again (a header line, then one line per bar)"
        ) from None
    except pl.exceptions.ComputeError as exc:
        raise _csv_error(path, data, delimiter, exc) from None
    _check_header(path, df.columns)
    # Line numbers are assigned before blank lines are dropped, so they match the file.
    df = df.with_row_index(LINE, offset=2).filter(~pl.all_horizontal(pl.exclude(LINE).is_null()))
    if df.height == 0:
        raise DataError(f"{path} line 2: the file has a header but no data rows; export the bars again")
    return RawFrame(df, origin, path.stem)


def _check_utf8(path: Path, data: bytes, delimiter: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        header = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r").split(delimiter)
        field = data[line_start : exc.start].count(delimiter.encode())
        column = f", column '{header[field]}'" if field < len(header) else ""
        raise DataError(
            f"{path} line {line}{column}: byte 0x{data[exc.start]:02X} is not valid UTF-8; "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`)"
        ) from None


def _check_delimiter(path: Path, header: str, delimiter: str) -> None:
    """A header without the delimiter but with another one: say which --delimiter to pass.

    Checked before parsing, because data rows (e.g. decimal commas in a ';' file) would
    otherwise fail first with a misleading field-count error.
    """
    if delimiter in header:
        return
    counts = {d: header.count(d) for d in _DELIMITERS if d != delimiter}
    best = max(counts, key=lambda d: counts[d])
    if counts[best]:
        shown = "\\t" if best == "\t" else best
        raise DataError(
            f"{path} line 1 (header): the header {header!r} is one column; the file "
            f"looks {shown!r}-delimited; pass --delimiter '{shown}'"
        )


def _check_header(path: Path, columns: list[str]) -> None:
    for col in columns:
        match = re.fullmatch(r"(.*)_duplicated_\d+", col)
        if match and match.group(1) in columns:
            raise DataError(
                f"{path} line 1 (header): column {match.group(1)!r} appears more than once; rename or delete the copies"
            )


def _csv_error(path: Path, data: bytes, delimiter: str, exc: Exception) -> DataError:
    """Find the first line with more fields than the header (the usual cause), else pass the parser's words on."""
    lines = pl.Series(data.decode("utf-8").split("\n")).str.count_matches(delimiter, literal=True)
    extra = (lines > lines[0]).arg_true()
    if extra.len():
        line = extra[0] + 1
        return DataError(
            f"{path} line {line}: {lines[line - 1] + 1} fields but the header has {lines[0] + 1}; "
            "remove the extra fields or quote values that contain the delimiter"
        )
    reason = str(exc).strip().splitlines()[0]
    return DataError(f"{path}: cannot parse the CSV ({reason}); check the delimiter and the quoting")


# ---------------------------------------------------------------- parquet


def read_parquet(path: Path) -> RawFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not readable parquet
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable parquet file ({reason}); check the file or pass --format") from None
    if df.height == 0:
        raise DataError(f"{path}: the parquet file has no rows; export the bars again")
    return RawFrame(df.with_row_index(LINE, offset=1), Origin(str(path), "row"), path.stem)


# ---------------------------------------------------------------- SQLite


def read_sqlite(path: Path, query: str | None) -> RawFrame:
    """The assets/series schema by default, or any SELECT. The database is opened read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open the SQLite database ({exc})") from None
    try:
        if query is None:
            query, label, drop = _default_query(conn, path)
        else:
            label, drop = f"{path} (query result)", []
        df = _fetch_as_text(conn, path, query.strip().rstrip(";"))
    finally:
        conn.close()
    if df.height == 0:
        raise DataError(f"{label}: no rows; check the query or the table")
    return RawFrame(df.drop(drop).with_row_index(LINE, offset=1), Origin(label, "row"), path.stem)


def _tables(conn: sqlite3.Connection, path: Path) -> list[str]:
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"{path}: not a SQLite database ({exc}); pass a .sqlite file, or --format csv/parquet"
        ) from None
    return [r[0] for r in rows]


def _default_query(conn: sqlite3.Connection, path: Path) -> tuple[str, str, list[str]]:
    tables = _tables(conn, path)
    lower = {t.lower(): t for t in tables}
    series_cols = [r[1].lower() for r in conn.execute("PRAGMA table_info(series)")] if "series" in lower else []
    needed = ["series"] if "symbol" in series_cols else ["assets", "series"]
    missing = [t for t in needed if t not in lower]
    if missing:
        have = ", ".join(tables) if tables else "none"
        raise DataError(
            f"{path}: missing table(s) {', '.join(missing)} of the default "
            f"assets/series schema; the database has tables: {have}; "
            "pass --query 'SELECT symbol, timestamp, close FROM <table>' to read another table"
        )
    label = f"{path} (table series)"
    if "symbol" in series_cols:
        return "SELECT * FROM series", label, []
    # The ids only link the two tables; they are not data, so they do not become extra columns.
    # Other asset columns (sector, industry, ...) describe the symbol and are carried onto its bars.
    asset_cols = [r[1] for r in conn.execute("PRAGMA table_info(assets)")]
    carried = [c for c in asset_cols if c.lower() not in ("asset_id", "id", "symbol") and c.lower() not in series_cols]
    extra = "".join(f', a."{_quote(c)}" AS "{_quote(c)}"' for c in carried)
    joined = f"SELECT a.symbol AS symbol{extra}, s.* FROM series AS s LEFT JOIN assets AS a ON a.asset_id = s.asset_id"
    return joined, label, [c for c in ("asset_id", "id") if c in series_cols]


def _fetch_as_text(conn: sqlite3.Connection, path: Path, query: str) -> pl.DataFrame:
    """Every column CAST to TEXT in SQL: SQLite columns may mix types, text parses uniformly."""
    try:
        names = [d[0] for d in conn.execute(query).description or []]
        if not names:
            raise DataError(f"{path}: --query returned no columns; pass a SELECT statement")
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise DataError(
                f"{path}: --query returns column {dup!r} more than once; select it once (or alias the copies)"
            )
        casts = ", ".join(f'CAST("{_quote(n)}" AS TEXT)' for n in names)
        cursor = conn.execute(f"SELECT {casts} FROM ({query})")
        schema = dict.fromkeys(names, pl.String)
        batches = []
        while rows := cursor.fetchmany(_SQL_BATCH):
            batches.append(pl.DataFrame(rows, schema=schema, orient="row"))
    except sqlite3.Error as exc:
        have = ", ".join(_tables(conn, path)) or "none"
        raise DataError(
            f"{path}: the query failed ({exc}); the database has tables: {have}; fix the --query SQL"
        ) from None
    return pl.concat(batches) if batches else pl.DataFrame(schema=schema)


def _quote(name: str) -> str:
    return name.replace('"', '""')
