"""Bar frequencies: parse '5m'/'1h'/'1d', infer from timestamps, annualisation factors."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

from quant_cli.errors import DataError, RecipeError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def parse_frequency(text: str) -> dt.timedelta:
    match = _PATTERN.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise DataError(
            f"frequency {text!r} is not understood; use a count and a unit s/m/h/d/w, e.g. '5m', '1h', '1d'"
        )
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_duration(text: str, key: str, example: str = "'5d', '12h'") -> dt.timedelta:
    """A recipe value that must be a duration: RecipeError naming `key` if it is not one."""
    try:
        return parse_frequency(text)
    except DataError:
        raise RecipeError(
            f"{key}: {text!r} is not a duration; use a count and a unit s/m/h/d/w, e.g. {example}"
        ) from None


def format_frequency(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m", "s"):
        if seconds % _UNITS[unit] == 0 and seconds >= _UNITS[unit]:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def infer_frequency(bars: pl.DataFrame) -> str | None:
    """Median spacing of consecutive bars within a symbol; weekends and holidays do not count."""
    diffs = bars.select(pl.col("ts").diff().over("symbol").alias("d")).drop_nulls()["d"]
    if diffs.len() == 0:
        return None
    median = diffs.median()
    if median >= dt.timedelta(days=1) and median < dt.timedelta(days=4):
        return "1d"  # business-day calendars have 3-day gaps over weekends
    return format_frequency(median)


def periods_per_year(frequency: str | None) -> float:
    """Bars per year for annualising: 252 trading days; intraday bars assume 6.5-hour sessions."""
    if not frequency:
        return 252.0
    delta = parse_frequency(frequency)
    day = dt.timedelta(days=1)
    if delta >= dt.timedelta(days=7):
        return 52.0 * 7 * day / delta
    if delta >= day:
        return 252.0 * day / delta
    return 252.0 * dt.timedelta(hours=6.5) / delta


MIN_SPAN_FOR_OBSERVED = dt.timedelta(days=28)


def observed_periods_per_year(ts: pl.Series) -> float | None:
    """Bars per year actually in the data: (distinct timestamps − 1) / span in years of 365.25 days.

    Hourly FX trades ~6,200 bars a year and crypto 8,760, where the frequency alone (which assumes
    6.5-hour equity sessions) would say 1,638. None when the data spans less than four weeks
    (too short to see the calendar), so the caller falls back to periods_per_year(frequency).
    """
    unique = ts.drop_nulls().unique()
    if unique.len() < 2:
        return None
    span = unique.max() - unique.min()
    if span < MIN_SPAN_FOR_OBSERVED:
        return None
    return (unique.len() - 1) / (span.total_seconds() / (365.25 * 86400))
