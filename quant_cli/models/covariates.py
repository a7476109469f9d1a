"""Covariates beside the feature windows (issue 19 §1), torch-free: static text columns per symbol and
known-future calendar fields.

Static covariates (`model.static_columns`, flag static_covariates): text columns of the bars that
describe the symbol (e.g. `sector`; the bar store keeps a text column only when it has at most one value
per symbol, quant_cli.data.schema). `static_frame` reads them off the bars — a symbol whose value changes
within the bars is refused with one line rather than guessed at — and `StaticCodes` turns them into
integer categories fitted on the TRAINING rows only: ids 1..V for the values seen there, 0 for a value
never seen in training (or missing), which a network pins to a neutral zero vector. The model keeps the
vocabulary and each training symbol's value, so a bundle scores a request that lacks the column with the
value the symbol had in training.

Known-future covariates (`model.known_future`, flag known_future): calendar fields (minute, hour,
day_of_week, day_of_month, month) of the h bars AFTER t. They are derived from the row's own timestamp
and the data's bar calendar only — never read from later rows, which may not exist yet when t is scored.
The calendar (`fit_calendar`) is fitted on the training timestamps: the bar step (the dataset's
frequency, or the median spacing), the weekdays bars fall on (an equity calendar skips weekends) and,
for intraday bars, the session's first and last bar time of day. `future_fields` steps t forward by
the bar step h times, rolling past a session's end to the next trading day's first bar. Holidays are not
known: a bar expected on a holiday is stepped onto it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data.frequency import parse_frequency
from quant_cli.errors import DataError

FIELD_SIZES = {"minute": 60, "hour": 24, "day_of_week": 7, "day_of_month": 32, "month": 13}  # codes 0..size-1
_US_PER_DAY = 86_400_000_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


# ---- static covariates --------------------------------------------------------------------------


def static_frame(bars: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """symbol, ts and the static `columns` of `bars` as text (null where a bar has none). DataError (one
    line) when a column is absent, or when a symbol has two values of a column (not static)."""
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        text = [c for c, t in bars.schema.items() if t == pl.String and c != "symbol"]
        raise DataError(
            f"model.static_columns names {missing[0]!r}, which the dataset's bars lack (their text columns: "
            f"{text or 'none'}); ingest bars with that column or remove it from model.static_columns"
        )
    frame = bars.select("symbol", "ts", *(pl.col(c).cast(pl.String) for c in columns))
    for column in columns:
        counts = frame.group_by("symbol").agg(pl.col(column).drop_nulls().unique().sort().alias("values"))
        changing = counts.filter(pl.col("values").list.len() > 1).sort("symbol")
        if changing.height:
            symbol, values = changing.row(0)
            raise DataError(
                f"model.static_columns: column {column!r} of symbol {symbol!r} changes over time "
                f"({', '.join(map(repr, values[:3]))}); a static covariate must have one value per symbol: "
                "fix the data or remove the column from model.static_columns"
            )
    return frame


def bar_inputs(model: Any, bars: pl.DataFrame, timeframes: list[str], strict: bool = True) -> pl.DataFrame | None:
    """symbol, ts and what `model` reads from the bars beside the features (None: nothing): the raw-bar
    channels (`model.needs_bars()`) and the static columns (`model.static_columns`) — the `channels`
    frame of its panel (quant_cli.models.panel.make_panel). `strict = False` (a served request): static
    columns the bars lack are left to the model's training values, and no constancy check."""
    frames = []
    if model.needs_bars():
        from quant_cli.features.bars import bar_channels

        frames.append(bar_channels(bars, timeframes))
    static = list(getattr(model, "static_columns", []))
    if static and strict:
        frames.append(static_frame(bars, static))
    elif static and any(c in bars.columns for c in static):
        frames.append(bars.select("symbol", "ts", *(pl.col(c).cast(pl.String) for c in static if c in bars.columns)))
    if not frames:
        return None
    out = frames[0]
    for frame in frames[1:]:
        out = out.join(frame.with_columns(pl.col("symbol").cast(out.schema["symbol"])), on=["symbol", "ts"], how="left")
    return out


@dataclass
class StaticCodes:
    """Integer categories of the static columns, fitted on training rows: ids 1..V per column, 0 = unknown."""

    columns: list[str]
    vocab: dict[str, list[str]]  # column → its training values, sorted (value k has id k + 1)
    by_symbol: dict[str, dict[str, str]]  # column → training symbol → its value (requests without the column)

    @classmethod
    def fit(cls, columns: list[str], symbols: np.ndarray, values: dict[str, np.ndarray]) -> StaticCodes:
        """`values[column]`: (n,) text of the training rows (None where missing)."""
        vocab, by_symbol = {}, {}
        for column in columns:
            given = np.array([v is not None for v in values[column]], dtype=bool)
            vocab[column] = sorted({str(v) for v in values[column][given]})
            by_symbol[column] = dict(zip(np.asarray(symbols)[given].astype(str), map(str, values[column][given])))
        return cls(list(columns), vocab, by_symbol)

    @property
    def sizes(self) -> list[int]:
        """Embedding rows each column needs: its values plus the unknown id 0."""
        return [len(self.vocab[c]) + 1 for c in self.columns]

    def ids(self, symbols: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
        """(n, S) int64 ids of the rows: each column's value from `values` (the rows' bars) where given,
        else the symbol's training value, else 0; a value not seen in training is 0."""
        symbols = pl.Series(np.asarray(symbols).astype(str), dtype=pl.String)
        out = np.zeros((len(symbols), len(self.columns)), dtype=np.int64)
        for j, column in enumerate(self.columns):
            lookup = {value: k + 1 for k, value in enumerate(self.vocab[column])}
            trained = {s: lookup[v] for s, v in self.by_symbol[column].items()}
            ids = symbols.replace_strict(trained, default=0, return_dtype=pl.Int64)
            if values.get(column) is not None:  # the rows' own value wins where they have one
                given = pl.Series(values[column], dtype=pl.String)
                ids = given.replace_strict(lookup, default=0, return_dtype=pl.Int64).zip_with(given.is_not_null(), ids)
            out[:, j] = ids.to_numpy()
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StaticCodes:
        return cls(list(data["columns"]), dict(data["vocab"]), dict(data["by_symbol"]))


# ---- known-future calendar fields ---------------------------------------------------------------


@dataclass
class Calendar:
    """The bar calendar fitted on training timestamps (microseconds since the epoch, UTC)."""

    step_us: int  # the bar step
    weekdays: list[int]  # weekdays (Monday = 0) bars fall on
    session: list[int] | None = None  # intraday: first and last bar time of day (µs after midnight)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calendar:
        return cls(int(data["step_us"]), [int(d) for d in data["weekdays"]], data.get("session"))


def _micros(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts).astype("datetime64[us]").astype(np.int64)


def fit_calendar(ts: np.ndarray, symbols: np.ndarray, frequency: str | None = None) -> Calendar:
    """The calendar of training rows `ts` (any order) of `symbols`: the step is `frequency` when given,
    else the median spacing of a symbol's consecutive rows ('1d' for 1–4 days: weekend gaps)."""
    us = _micros(ts)
    if frequency:
        step = int(parse_frequency(frequency).total_seconds() * 1_000_000)
    else:
        order = np.lexsort((us, np.asarray(symbols).astype(str)))
        same = np.asarray(symbols).astype(str)[order][1:] == np.asarray(symbols).astype(str)[order][:-1]
        gaps = np.diff(us[order])[same]
        step = int(np.median(gaps[gaps > 0])) if (gaps > 0).any() else _US_PER_DAY
        step = _US_PER_DAY if _US_PER_DAY <= step < 4 * _US_PER_DAY else step
    days = us // _US_PER_DAY
    weekdays = sorted(set(((days + _EPOCH_WEEKDAY) % 7).tolist())) or list(range(7))
    session = None
    if step < _US_PER_DAY and len(us):
        time_of_day = us - days * _US_PER_DAY
        session = [int(time_of_day.min()), int(time_of_day.max())]
    return Calendar(step, weekdays, session)


def future_times(ts: np.ndarray, calendar: Calendar, horizon: int) -> np.ndarray:
    """(n, horizon) int64 µs: the timestamps of the `horizon` bars after each of `ts`, by the calendar
    alone. Each depends on its own row's timestamp only."""
    current = _micros(ts).copy()
    allowed = np.zeros(7, dtype=bool)
    allowed[calendar.weekdays] = True
    out = np.empty((len(current), horizon), dtype=np.int64)
    for k in range(horizon):
        current = current + calendar.step_us
        day = current // _US_PER_DAY
        if calendar.session is not None:  # past the session's last bar: the next day's first bar
            after = current - day * _US_PER_DAY > calendar.session[1]
            day = np.where(after, day + 1, day)
            current = np.where(after, day * _US_PER_DAY + calendar.session[0], current)
        for _ in range(7):  # roll onto a trading weekday (at most six days on)
            closed = ~allowed[(day + _EPOCH_WEEKDAY) % 7]
            if not closed.any():
                break
            day = np.where(closed, day + 1, day)
            current = np.where(closed, current + _US_PER_DAY, current)
            if calendar.session is not None:
                current = np.where(closed, day * _US_PER_DAY + calendar.session[0], current)
        out[:, k] = current
    return out


def future_fields(ts: np.ndarray, calendar: Calendar, horizon: int, fields: list[str]) -> np.ndarray:
    """(n, horizon, len(fields)) int64 codes of the calendar `fields` (FIELD_SIZES) of the bars after t."""
    times = future_times(ts, calendar, horizon).astype("datetime64[us]")
    if not fields:
        return np.zeros((*times.shape, 0), dtype=np.int64)
    frame = pl.DataFrame({"t": times.reshape(-1)})
    expressions = {
        "minute": pl.col("t").dt.minute(),
        "hour": pl.col("t").dt.hour(),
        "day_of_week": pl.col("t").dt.weekday() - 1,  # polars: Monday = 1
        "day_of_month": pl.col("t").dt.day(),
        "month": pl.col("t").dt.month(),
    }
    codes = frame.select(expressions[f].cast(pl.Int64).alias(f) for f in fields).to_numpy()
    return codes.reshape(*times.shape, len(fields))
