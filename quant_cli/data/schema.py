"""The canonical bar schema (DESIGN.md §2): column aliases, type coercion, validation.

Frames read from a source carry two bookkeeping columns so that every error can point at the
exact place in the user's file: `__src` (an index into a list of `Origin`) and `__line` (the
1-based line of a CSV file, header = line 1; the 1-based row of a parquet file or SQL result).
They are dropped by `finalize`.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_cli.errors import DataError, suggest

SRC, LINE = "__src", "__line"
PRICES = ("open", "high", "low", "close")
OHLCV = (*PRICES, "volume")
# Present on every row and finite; prices > 0, volume >= 0. Other extras may hold nulls/NaN.
# adj_close may be missing for whole files (symbols) of a per-symbol folder: null there.
STRICT = (*PRICES, "adj_close", "volume")
# Magnitudes beyond these are not market data (and overflow returns and squared features).
PRICE_RANGE = (1e-12, 1e12)
MAX_VOLUME = 1e18
TS_DTYPE = pl.Datetime("us", "UTC")

# Keys are normalised header names (see `header_key`).
ALIASES: dict[str, str] = {
    **dict.fromkeys(("ts", "date", "datetime", "date_time", "timestamp", "time"), "ts"),
    **dict.fromkeys(("symbol", "ticker", "asset", "code"), "symbol"),
    **dict.fromkeys(("open", "o"), "open"),
    **dict.fromkeys(("high", "h"), "high"),
    **dict.fromkeys(("low", "l"), "low"),
    **dict.fromkeys(("close", "c"), "close"),
    **dict.fromkeys(("volume", "vol", "v"), "volume"),
    **dict.fromkeys(("adj_close", "adjclose", "adjusted_close"), "adj_close"),
}

_NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)
_AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
_OFFSET = r"[+-]\d{2}:?\d{2}$"
_TS_HELP = (
    "use ISO 8601, e.g. '2020-01-31', '2020-01-31 15:30:00' or "
    "'2020-01-31T15:30:00+00:00', or epoch seconds/milliseconds"
)


@dataclass
class Origin:
    """Where a frame came from, to phrase errors in the user's terms."""

    label: str  # the file as the user named it, or e.g. "prices.db (table series)"
    unit: str = "line"  # "line" for CSV (header = line 1), "row" for parquet and SQL results
    names: dict[str, str] = field(default_factory=dict)  # canonical name -> original header
    wide: bool = False  # close values live in one column per symbol

    def where(self, line: int) -> str:
        return f"{self.label} {self.unit} {line}"

    @property
    def header(self) -> str:
        return f"{self.label} line 1 (header)" if self.unit == "line" else f"{self.label} (columns)"

    def column(self, name: str, row: dict[str, Any]) -> str:
        if self.wide and name == "close":
            return str(row.get("symbol"))
        return self.names.get(name, name)


def header_key(name: str) -> str:
    """'Adj Close' -> 'adj_close': case, spaces and punctuation do not matter."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def find_ts_column(columns: list[str]) -> str | None:
    return next((c for c in columns if ALIASES.get(header_key(c)) == "ts"), None)


def rename_to_canonical(df: pl.DataFrame, origin: Origin) -> tuple[pl.DataFrame, list[str]]:
    """Map headers to canonical names; returns the frame and the blank-named columns dropped."""
    df = _join_date_and_time(df, origin)
    blank = [c for c in df.columns if c not in (SRC, LINE) and not header_key(c)]
    mapping: dict[str, str] = {}
    for col in df.columns:
        if col in (SRC, LINE) or col in blank:
            continue
        key = header_key(col)
        target = ALIASES.get(key, key)
        clash = next((c for c, t in mapping.items() if t == target), None)
        if clash is not None:
            raise DataError(
                f"{origin.header}: columns '{clash}' and '{col}' both mean '{target}'; "
                "keep one of them (rename or delete the other)"
            )
        mapping[col] = target
    for col, target in mapping.items():
        origin.names.setdefault(target, col)  # keeps 'Date+Time' when two columns made the timestamp
    return df.drop(blank).rename(mapping), blank


def _join_date_and_time(df: pl.DataFrame, origin: Origin) -> pl.DataFrame:
    """Separate 'Date' and 'Time' text columns (common in FX exports) become one timestamp."""
    keys = {header_key(c): c for c in df.columns}
    date, time = keys.get("date"), keys.get("time")
    if date is None or time is None or df.schema[date] != pl.String or df.schema[time] != pl.String:
        return df
    origin.names["ts"] = f"{date}+{time}"
    joined = pl.concat_str(pl.col(date).str.strip_chars(), pl.col(time).str.strip_chars(), separator=" ")
    return df.with_columns(joined.alias(date)).drop(time)


def require_columns(df: pl.DataFrame, origin: Origin, need_symbol: bool) -> None:
    found = ", ".join(repr(c) for c in origin.names.values()) or "none"
    if "ts" not in df.columns:
        raise DataError(
            f"{origin.header}: no timestamp column (found {found}); name it 'date' or "
            "'timestamp' (also accepted: ts, datetime, time)"
        )
    if need_symbol and "symbol" not in df.columns:
        raise DataError(
            f"{origin.header}: no symbol column (found {found}); add a 'symbol' "
            "column (also accepted: ticker, asset, code), "
            "or pass --layout per_symbol to take the symbol from the file name"
        )
    if "close" not in df.columns:
        raise DataError(
            f"{origin.header}: missing required column 'close' (found {found}); add a "
            "close column (also accepted: Close, C), "
            "or pass --layout wide if each column holds one symbol's close prices"
        )


def check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        hint = suggest(name, zoneinfo.available_timezones())
        raise DataError(
            f"--timezone {name!r} is not a known time zone{hint}; use an IANA name such as 'UTC' or 'America/New_York'"
        ) from None
    return name


# ---------------------------------------------------------------- coercion


def coerce(df: pl.DataFrame, origins: list[Origin], timezone: str) -> tuple[pl.DataFrame, list[str]]:
    """Timestamps to Datetime(us, UTC), prices/volume/extras to Float64, symbols to text.

    `df` may hold several files (its `__src` says which); returns the frame and the names of
    non-numeric extra columns that were dropped.
    """
    df = df.with_columns(parse_timestamps(df["ts"], timezone).alias("ts_parsed"))
    _first_unreadable(df, origins, "ts", "ts_parsed", lambda v: _ts_problem(v, timezone), f"fix the value; {_TS_HELP}")
    df = df.with_columns(pl.col("ts_parsed").alias("ts")).drop("ts_parsed")
    if "symbol" in df.columns:
        df = df.with_columns(pl.col("symbol").cast(pl.String).str.strip_chars())
    dropped = []
    for col in [c for c in df.columns if c not in (SRC, LINE, "ts", "symbol")]:
        parsed = to_float(df[col])
        if col in STRICT:
            df = df.with_columns(parsed.alias("parsed"))
            _first_unreadable(
                df, origins, col, "parsed", lambda v: f"{v!r} is not a number", "fix the value or delete the row"
            )
            df = df.with_columns(pl.col("parsed").alias(col)).drop("parsed")
        elif _numeric_throughout(df[col], parsed):
            df = df.with_columns(parsed.alias(col))
        elif _symbol_attribute(df, col):  # e.g. sector, industry: one text value per symbol
            df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars().replace("", None))
        else:
            dropped.append(origins[df[SRC][0]].names.get(col, col))
            df = df.drop(col)
    return df, dropped


def _numeric_throughout(raw: pl.Series, parsed: pl.Series) -> bool:
    """An extra column is kept when every value it has is a number (and it has some)."""
    missing = int((~present(raw)).sum())
    return parsed.null_count() == missing < raw.len()


def _symbol_attribute(df: pl.DataFrame, col: str) -> bool:
    """A text column with at most one distinct value per symbol (and some value) describes the symbol."""
    if "symbol" not in df.columns or not present(df[col]).any():
        return False
    text = pl.col(col).cast(pl.String).str.strip_chars().replace("", None)
    return bool(df.group_by("symbol").agg(text.drop_nulls().n_unique().alias("n"))["n"].max() <= 1)


def present(raw: pl.Series) -> pl.Series:
    """True where the source had a value (a blank CSV cell counts as missing)."""
    if raw.dtype == pl.String:
        return raw.str.strip_chars().str.len_chars().fill_null(0) > 0
    return raw.is_not_null()


def _first_unreadable(
    df: pl.DataFrame, origins: list[Origin], col: str, parsed: str, what: Callable[[Any], str], fix: str
) -> None:
    """Raise for the first row where the source had a value but it could not be converted."""
    bad = df.filter(present(df[col]) & pl.col(parsed).is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise row_error(row, origins, col, what(row[col]), fix)


def row_error(row: dict[str, Any], origins: list[Origin], col: str, what: str, fix: str) -> DataError:
    """'<file> line <n>, column '<name>': <what>; <fix>' in the user's own column names."""
    origin = origins[row[SRC]]
    return DataError(f"{origin.where(row[LINE])}, column '{origin.column(col, row)}': {what}; {fix}")


def to_float(raw: pl.Series) -> pl.Series:
    """Float64; null where a value is missing or is not a number."""
    if raw.dtype == pl.String:
        return raw.str.strip_chars().cast(pl.Float64, strict=False)
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    return pl.Series(raw.name, [None] * raw.len(), dtype=pl.Float64)


def parse_timestamps(raw: pl.Series, timezone: str) -> pl.Series:
    """Datetime(us, UTC); null where a value cannot be read (the caller reports the first one).

    Naive values are wall-clock time in `timezone` (ambiguous autumn hours take the earlier
    instant; times skipped by a spring clock change are errors); values with an offset are
    converted; integers are epoch seconds, milliseconds, micro- or nanoseconds by magnitude.
    """
    dtype = raw.dtype
    if dtype == pl.String:
        return _from_strings(raw, timezone)
    if isinstance(dtype, pl.Datetime):
        ts = raw.cast(pl.Datetime("us", dtype.time_zone))
        return ts.dt.convert_time_zone("UTC") if dtype.time_zone else _localize(ts, timezone)
    if dtype == pl.Date:
        return _localize(raw.cast(pl.Datetime("us")), timezone)
    if dtype.is_integer() or dtype.is_float():
        return _from_epoch(raw)
    return pl.Series(raw.name, [None] * raw.len(), dtype=TS_DTYPE)


def _from_strings(raw: pl.Series, timezone: str) -> pl.Series:
    text = (
        raw.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2})T", "${1} ")
        .str.replace(r"(?i)\s*(z|utc)$", "+00:00")
        .str.replace(r"\s+([+-]\d{2}:?\d{2})$", "${1}")
    )
    values = text.drop_nulls()
    if values.len() and values.str.contains(r"^-?\d+$").all():
        if values.str.len_chars().eq(8).all():  # 20200131: a compact date, not epoch seconds in 1970
            return _localize(text.str.to_datetime("%Y%m%d", strict=False, time_unit="us"), timezone)
        return _from_epoch(text.cast(pl.Int64, strict=False))
    has_offset = text.str.contains(r"\d:\d{2}(\.\d+)?" + _OFFSET).fill_null(False)
    if not has_offset.any():
        return _localize(_first_fit(text, _NAIVE_FORMATS), timezone).alias(raw.name)
    naive = _localize(_first_fit(_only(text, ~has_offset), _NAIVE_FORMATS), timezone)
    aware = _first_fit(_only(text, has_offset), _AWARE_FORMATS, time_zone="UTC").cast(TS_DTYPE)
    return aware.fill_null(naive).alias(raw.name)


def _only(text: pl.Series, keep: pl.Series) -> pl.Series:
    return pl.select(pl.when(keep).then(text)).to_series()


def _first_fit(text: pl.Series, formats: tuple[str, ...], **tz: str) -> pl.Series:
    """Try formats on the values still unparsed; one pass when a file is consistent.

    The formats that read the first value go first, so a consistent file costs a single pass.
    """
    sample = text.drop_nulls().head(1)
    fits = [f for f in formats if sample.str.to_datetime(f, strict=False, **tz).null_count() == 0]
    formats = (*fits, *(f for f in formats if f not in fits))
    out = text.str.to_datetime(formats[0], strict=False, time_unit="us", **tz)
    for fmt in formats[1:]:
        if out.null_count() == text.null_count():
            break
        out = out.fill_null(text.str.to_datetime(fmt, strict=False, time_unit="us", **tz))
    return out


def _localize(naive: pl.Series, timezone: str) -> pl.Series:
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC").cast(TS_DTYPE)


def _from_epoch(values: pl.Series) -> pl.Series:
    """Epoch numbers are UTC by definition; the unit follows from the magnitude."""
    biggest = values.abs().max() or 0
    to_us = 1e6 if biggest < 1e11 else 1e3 if biggest < 1e14 else 1.0 if biggest < 1e17 else 1e-3
    micros = (values.cast(pl.Float64) * to_us).round().cast(pl.Int64)
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _ts_problem(value: Any, timezone: str) -> str:
    """Why one value failed: unknown format, or a wall-clock time skipped by a clock change."""
    text = str(value).strip().replace("T", " ", 1)
    as_naive = pl.Series([text]).str.to_datetime(_NAIVE_FORMATS[0], strict=False)
    if as_naive.null_count() == 0 and timezone != "UTC":
        return f"{value!r} does not exist in time zone {timezone} (skipped by a clock change)"
    return f"{value!r} is not a date/time"


# ---------------------------------------------------------------- validation

Check = tuple[str, pl.Expr, Callable[[dict[str, Any]], str], str]


def _checks(columns: list[str]) -> list[Check]:
    """Row rules of the canonical schema, in the order they are reported."""
    has = set(columns).__contains__
    checks: list[Check] = [
        (c, pl.col(c).is_null(), lambda r: "empty value", "fill it in or delete the row")
        for c in ("ts", "symbol", *STRICT)
        if has(c)
    ]
    if has("symbol"):
        checks.append(
            ("symbol", pl.col("symbol").str.len_chars() == 0, lambda r: "empty symbol", "fill it in or delete the row")
        )
    checks += [
        (c, ~pl.col(c).is_finite(), lambda r, c=c: f"{r[c]} is not a finite number", "fix the value or delete the row")
        for c in STRICT
        if has(c)
    ]
    checks += [
        (
            c,
            pl.col(c) <= 0,
            lambda r, c=c: f"price {r[c]} is not positive",
            "prices must be > 0; fix the value or delete the row",
        )
        for c in (*PRICES, "adj_close")
        if has(c)
    ]
    low, high = PRICE_RANGE
    checks += [
        (
            c,
            (pl.col(c) < low) | (pl.col(c) > high),
            lambda r, c=c: f"price {r[c]:g} is out of range",
            f"prices must be between {low:g} and {high:g}; fix the value or delete the row",
        )
        for c in (*PRICES, "adj_close")
        if has(c)
    ]
    if has("high") and has("low"):
        checks.append(
            (
                "high",
                pl.col("high") < pl.col("low"),
                lambda r: f"high {r['high']} is below low {r['low']}",
                "fix the bar: high must be >= low",
            )
        )
    body = [c for c in ("open", "close") if has(c)]
    if has("high") and body:
        top = pl.max_horizontal(*body)
        checks.append(
            (
                "high",
                pl.col("high") < top,
                lambda r: f"high {r['high']} is below {_body(r, body, max)}",
                "fix the bar: high must be >= max(open, close)",
            )
        )
    if has("low") and body:
        bottom = pl.min_horizontal(*body)
        checks.append(
            (
                "low",
                pl.col("low") > bottom,
                lambda r: f"low {r['low']} is above {_body(r, body, min)}",
                "fix the bar: low must be <= min(open, close)",
            )
        )
    if has("volume"):
        checks.append(
            (
                "volume",
                pl.col("volume") < 0,
                lambda r: f"volume {r['volume']} is negative",
                "volume must be >= 0; fix the value or delete the row",
            )
        )
        checks.append(
            (
                "volume",
                pl.col("volume") > MAX_VOLUME,
                lambda r: f"volume {r['volume']:g} is out of range",
                f"volume must be at most {MAX_VOLUME:g}; fix the value or delete the row",
            )
        )
    return checks


def _body(row: dict[str, Any], body: list[str], pick: Callable[..., Any]) -> str:
    name = pick(body, key=lambda c: row[c])
    return f"{name} {row[name]}"


def validate(df: pl.DataFrame, origins: list[Origin], absent: dict[str, list[int]] | None = None) -> None:
    """Raise a DataError naming the first row (in input order) that breaks a rule.

    `absent` maps a column to the sources (`__src`) that do not have it at all: their nulls in it
    are not empty values.
    """
    checks = []
    for col, bad, what, fix in _checks(df.columns):
        if absent and absent.get(col):
            bad = bad & ~pl.col(SRC).is_in(absent[col])
        checks.append((col, bad.fill_null(False), what, fix))
    # One pass flags the broken rules (a served request is validated per call); then the first
    # broken rule, in order, finds its first row.
    flags = df.select(bad.any().alias(f"_{i}") for i, (_, bad, _, _) in enumerate(checks)).row(0) if checks else ()
    for (col, bad, what, fix), broken in zip(checks, flags):
        if broken:
            row = df.filter(bad).head(1).row(0, named=True)
            raise row_error(row, origins, col, what(row), fix)
    _check_duplicates(df, origins)


def _check_duplicates(df: pl.DataFrame, origins: list[Origin]) -> None:
    dups = df.select(SRC, LINE, "symbol", "ts").filter(pl.struct("symbol", "ts").is_duplicated())
    if not dups.height:
        return
    first = dups.row(0, named=True)
    same = dups.filter((pl.col("symbol") == first["symbol"]) & (pl.col("ts") == first["ts"]))
    second = same.row(1, named=True)
    earlier = origins[first[SRC]].where(first[LINE])
    origin = origins[second[SRC]]
    raise DataError(
        f"{origin.where(second[LINE])}, column '{origin.names.get('ts', 'ts')}': "
        f"duplicate bar for symbol {first['symbol']!r} at "
        f"{first['ts'].isoformat()} (also at {earlier}); keep one of the two rows"
    )


def finalize(df: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """Canonical column order, sorted by (symbol, ts); also says whether the input was unsorted."""
    # Only time order within a symbol matters: date-major panels (all symbols per date) are normal.
    backwards = pl.col("ts") < pl.col("ts").shift(1).over("symbol")
    unsorted = bool(df.select(backwards.fill_null(False).any()).item())
    front = [c for c in ("symbol", "ts", *OHLCV) if c in df.columns]
    extras = [c for c in df.columns if c not in front and c not in (SRC, LINE)]
    return df.select(*front, *extras).sort("symbol", "ts"), unsorted
