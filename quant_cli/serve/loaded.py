"""A loaded, verified bundle: the one object batch predict and the server score with.

`score_bars` takes raw bars (long format, one or more symbols), checks them against the bundle's
input schema (columns, required symbols, the measured number of bars per symbol), computes the
features with the bundle's own FittedPipeline — the same code path training used, so there is no
train/serve skew — and scores with the model through its public API. `score_features` takes
precomputed (raw, not yet preprocessed) feature rows, as the run's feature table holds them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data import schema
from quant_cli.data.frequency import format_frequency, parse_frequency
from quant_cli.data.schema import LINE, SRC, TS_DTYPE, Origin
from quant_cli.errors import DataError, RunError, shown
from quant_cli.features.regime import HMM_FEATURE
from quant_cli.models.base import Model
from quant_cli.pipeline import lookback
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.pipeline.preprocess import drop_incomplete, raw_matrix
from quant_cli.serve.panel import score_panel

KEYS = ["symbol", "ts"]
REQUEST_SEP = "\x1f"  # "<request><REQUEST_SEP><symbol>": each request's symbols renamed apart in a batch


@dataclass
class InputSpec:
    """What a request must carry (the bundle's input schema, in code)."""

    required_bars: int
    columns: list[str]  # raw bar columns besides symbol and ts
    required_symbols: list[str] = field(default_factory=list)
    why_symbols: str = ""
    keys: list[str] = field(default_factory=list)  # text columns such as sector
    window: int = 1  # rows one score reads (a sequence model's seq_len)
    timeframes: list[str] | None = None  # the raw-bar channels' timeframes; None: the model reads no bars

    def to_json(self) -> dict[str, Any]:
        return {
            "required_bars": self.required_bars,
            "columns": self.columns,
            "required_symbols": self.required_symbols,
            "why_symbols": self.why_symbols,
            "keys": self.keys,
            "window": self.window,
            "timeframes": self.timeframes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            int(data["required_bars"]),
            list(data["columns"]),
            list(data["required_symbols"]),
            data.get("why_symbols", ""),
            list(data.get("keys", [])),
            int(data.get("window", 1)),
            data.get("timeframes"),
        )


@dataclass
class LoadedBundle:
    path: Path
    manifest: dict[str, Any]
    pipeline: FittedPipeline
    model: Model
    spec: InputSpec
    example: tuple[pl.DataFrame, pl.DataFrame] | None = field(default=None, repr=False)  # request, expected scores

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def output_columns(self) -> list[str]:
        probs = [f"p_{c:g}" for c in self.model.classes_] if self.model.is_classifier else []
        return ["symbol", "ts", "score", *probs]

    def metadata(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "manifest": self.manifest,
            "features": self.pipeline.features,
            "lookback": {"required_bars": self.spec.required_bars, "per_feature": self.pipeline.warmup},
            "model": {
                "name": self.model.name,
                "task": self.model.task,
                "classes": self.model.classes_.tolist() if self.model.is_classifier else None,
            },
            "input": self.spec.to_json(),
            "outputs": self.output_columns,
        }

    # ---- raw bars --------------------------------------------------------------------------------

    def score_bars(self, bars: pl.DataFrame, every_bar: bool = False) -> pl.DataFrame:
        """Scores of each symbol's latest bar (or, `every_bar`, of every bar with enough history)."""
        self.check_bars(bars, every_bar)
        return self._score_checked(bars, every_bar)

    def _score_checked(self, bars: pl.DataFrame, every_bar: bool = False) -> pl.DataFrame:
        bars = bars.sort(KEYS)
        self.check_spacing(bars)
        if self.model.uses_panel():  # windows of each symbol's rows (serve/panel.py)
            return score_panel(
                self.pipeline,
                self.model,
                bars,
                timeframes=self.spec.timeframes,
                first=self.spec.required_bars - 1,
                last_only=not every_bar,
            )
        return self._score(self._scored_rows(self.pipeline.compute(bars), every_bar))

    def _scored_rows(self, table: pl.DataFrame, every_bar: bool) -> pl.DataFrame:
        """The raw feature rows to score (`table` sorted by symbol, ts): each symbol's last row, or
        (`every_bar`) every row with the required history. Preprocessing is row by row, so only
        these are transformed — not the whole lookback, most of a small request's cost otherwise."""
        symbols = table["symbol"].to_numpy()
        if not every_bar:
            return table.gather(np.flatnonzero(np.r_[symbols[1:] != symbols[:-1], True]))
        return table.filter(pl.int_range(pl.len()).over("symbol") >= self.spec.required_bars - 1)

    def check_bars(self, bars: pl.DataFrame, every_bar: bool = False) -> None:
        missing = [c for c in ("symbol", "ts", *self.spec.columns, *self.spec.keys) if c not in bars.columns]
        if missing:
            raise DataError(
                f"the bars lack column {missing[0]!r}; this bundle reads columns "
                f"{['symbol', 'ts', *self.spec.columns, *self.spec.keys]}"
            )
        present = set(bars["symbol"].unique().to_list())
        if self.universe is not None and not present <= self.universe:
            outside = sorted(present - self.universe)
            raise DataError(
                f"symbol {shown(outside[0])} is not in this bundle's universe: cross-sectional features "
                f"such as {self.cross_sectional[0]} are statistics over the {len(self.universe)} symbols "
                "the model was trained on, and another symbol would change every score; send only those "
                "symbols (GET /metadata: input.required_symbols)"
            )
        absent = [s for s in self.spec.required_symbols if s not in present]
        if absent:
            raise DataError(
                f"the bars lack required symbol(s) {absent[:5]}{' and more' if len(absent) > 5 else ''} "
                f"({self.spec.why_symbols}); include their bars"
            )
        counts = bars.group_by("symbol").len().sort("len", "symbol")
        short = counts.filter(pl.col("len") < self.spec.required_bars)
        if short.height and (not every_bar or short.height == counts.height):
            symbol, n = short.row(0)
            window = f" and the model's window of {self.spec.window} rows" if self.spec.window > 1 else ""
            raise DataError(
                f"symbol {symbol!r} has {n} bar(s); this bundle needs at least {self.spec.required_bars} bars per "
                f"symbol (its features' measured lookback{window}); send more history"
            )

    @functools.cached_property
    def cross_sectional(self) -> list[str]:
        return lookback.cross_sectional(self.pipeline)

    @functools.cached_property
    def universe(self) -> frozenset[str] | None:
        """The only symbols a request may carry when features are statistics across symbols (the
        training universe, all required): None when every feature is per symbol."""
        return frozenset(self.spec.required_symbols) if self.cross_sectional else None

    @functools.cached_property
    def spacing(self) -> tuple[str, int] | None:
        """The bars' spacing the bundle was trained on ('1d', in microseconds), if the data declared one."""
        text = self.pipeline.options.get("bar_spacing")
        return None if not text else (text, int(parse_frequency(text) / dt.timedelta(microseconds=1)))

    def check_spacing(self, bars: pl.DataFrame) -> None:
        """Refuse a symbol whose bars (sorted by symbol, ts) are spaced unlike the training bars (a daily
        bundle sent hourly bars): each symbol's median spacing, as data/frequency.py infers it. numpy on
        the sorted frame, a few microseconds: infer_frequency's polars query costs ~0.5 ms a request."""
        if self.spacing is None or bars.height < 2:
            return
        want, micros = self.spacing
        medians, rows = symbol_spacings(bars)
        wrong = np.flatnonzero(medians != _daily(np.int64(micros)))
        if len(wrong):
            have = format_frequency(dt.timedelta(microseconds=int(medians[wrong[0]])))
            symbol = bars["symbol"][int(rows[wrong[0]])]
            raise DataError(
                f"symbol {shown(symbol)} has {have} bars; this bundle was trained on {want} bars; "
                f"send {want} bars (resample the {have} bars first)"
            )

    # ---- several requests at once (serve/batching.py) --------------------------------------------

    @functools.cached_property
    def batchable(self) -> bool:
        """Whether requests' bars may share one engine call: only when every feature is per symbol
        and nothing reads a symbol's name (no benchmark, cross-sectional feature, key column, or
        per-name adjustment) — then renaming each request's symbols apart changes no value."""
        return not (
            self.spec.required_symbols
            or self.spec.keys
            or self.pipeline.options.get("benchmark")
            or self.pipeline.options.get("references")
            or self.pipeline.adjustment.raw_symbols
            or lookback.cross_sectional(self.pipeline)
            or self.model.uses_panel()
        )  # sequence models score windows of rows: one request at a time

    def score_bars_many(self, requests: list[pl.DataFrame]) -> list[pl.DataFrame | Exception]:
        """score_bars of each request (latest bar per symbol), with one feature computation for all
        (score_keyed). Each request is checked on its own; a failing batch is rescored one request
        at a time, so each request gets its own result or error."""
        out: list[pl.DataFrame | Exception | None] = [attempt(self.check_bars, bars) for bars in requests]
        good = [i for i, refused in enumerate(out) if refused is None]

        def one_by_one() -> list[pl.DataFrame | Exception]:  # each checked above: scored without checking again
            return [
                refused if refused is not None else attempt(self._score_checked, bars)
                for refused, bars in zip(out, requests)
            ]

        if len(good) < 2 or not self.batchable:
            return one_by_one()
        try:
            scores = self.score_keyed(
                pl.concat(
                    [
                        requests[i].with_columns(pl.concat_str(pl.lit(f"{i}{REQUEST_SEP}"), "symbol").alias("symbol"))
                        for i in good
                    ]
                ),
                len(requests),
            )
        except Exception:
            return one_by_one()
        for i in good:
            out[i] = scores[i]
        return out  # type: ignore[return-value]

    def score_keyed(self, keyed: pl.DataFrame, requests: int) -> list[pl.DataFrame]:
        """score_bars of `requests` requests' validated bars in ONE frame, each request's symbols
        renamed apart ("<request>\x1f<symbol>") for the engine and restored before the model; only
        for a `batchable` bundle. Raises if any request breaks the input rules: the caller then
        scores each request alone, for its own error."""
        if not self.batchable:
            raise RunError(
                "this bundle's features or model read symbol names across a request; score requests one at a time"
            )
        keyed = keyed.sort(KEYS)
        self.check_bars(keyed)
        self.check_spacing(keyed)
        rows = self._scored_rows(self.pipeline.compute(keyed), every_bar=False)
        rows = drop_incomplete(rows, self.pipeline.features, self.pipeline.preprocess.get("fill", ""))
        parts = rows["symbol"].str.splitn(REQUEST_SEP, 2)  # splitn: a symbol may itself hold the separator
        scores = self._score(rows.with_columns(parts.struct.field("field_1").alias("symbol")))
        request = parts.struct.field("field_0").cast(pl.Int64).to_numpy()
        return [scores.gather(np.flatnonzero(request == i)) for i in range(requests)]

    def score_features_many(self, rows: FeatureRows, counts: list[int]) -> list[pl.DataFrame | Exception]:
        """Scores of several requests' feature rows (`counts` rows each, in order), as one call:
        rows are scored independently of each other, so the split is exact."""
        bounds = np.cumsum([0, *counts]).tolist()
        parts = [rows.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if (
            len(parts) == 1 or self.pipeline.preprocess.get("fill") == "drop" or self.model.uses_panel()
        ):  # dropped rows would shift
            # the split; a sequence model reads each request's rows as one history
            return [attempt(self.score_feature_rows, part) for part in parts]
        try:
            scores = self.score_feature_rows(rows)
        except Exception:
            return [attempt(self.score_feature_rows, part) for part in parts]
        return [scores.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]

    # ---- precomputed features -------------------------------------------------------------------

    def score_features(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Scores of feature rows (symbol, ts and every pipeline feature, raw as the feature table holds them)."""
        present = set(rows.columns)  # DataFrame.columns builds a new list per call
        missing = [c for c in (*KEYS, *self.pipeline.features) if c not in present]
        if missing:
            raise DataError(
                f"the feature rows lack column {missing[0]!r}; this bundle reads "
                f"{len(self.pipeline.features)} features "
                "(GET /metadata lists them)"
            )
        return self.score_feature_rows(FeatureRows.of(rows, self.pipeline.features))

    def score_feature_rows(self, rows: FeatureRows) -> pl.DataFrame:
        if self.pipeline.fits_regime:  # its column is a filter over history, which loose feature rows do not carry
            raise DataError(
                f"this bundle's feature {HMM_FEATURE!r} is filtered over each symbol's bar history; "
                "send bars, not feature rows"
            )
        if self.model.uses_panel():  # every row with a full window among the rows sent
            return score_panel(
                self.pipeline,
                self.model,
                rows.frame(self.pipeline.features).sort(KEYS),
                timeframes=self.spec.timeframes,
            )
        return self._score_rows(rows)

    # ---- the model ------------------------------------------------------------------------------

    def _score(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Scores of raw feature rows (tabular models; panel models score in serve/panel.py)."""
        return self._score_rows(FeatureRows.of(rows, self.pipeline.features))

    def _score_rows(self, rows: FeatureRows) -> pl.DataFrame:
        if self.pipeline.preprocess.get("fill") == "drop":  # as training: rows missing a feature are not scored
            rows = rows.take(~np.isnan(rows.values).any(axis=1))
        X = self.pipeline.preprocess_matrix(
            rows.values.copy()
        )  # in place: the caller's rows stay raw (a failed batch rescores them)
        score = self.model.predict(X, symbols=rows.symbols.to_numpy())
        out = pl.DataFrame(
            [rows.symbols, rows.ts, pl.Series("score", score, dtype=pl.Float64)]
        )  # no query plan per request
        if self.model.is_classifier:
            proba = self.model.predict_proba(X, symbols=rows.symbols)
            out = out.with_columns(pl.Series(f"p_{c:g}", proba[:, i]) for i, c in enumerate(self.model.classes_))
        return out


@dataclass
class FeatureRows:
    """Raw feature rows as the scorer reads them: the keys, and a (rows, features) float32 matrix
    in the pipeline's feature order, NaN where missing. The server builds it straight from a
    request (a polars frame of 158 columns costs more than scoring its row)."""

    symbols: pl.Series  # String
    ts: pl.Series  # Datetime("us", "UTC")
    values: np.ndarray

    @classmethod
    def of(cls, frame: pl.DataFrame, features: list[str]) -> FeatureRows:
        return cls(frame["symbol"].cast(pl.String), frame["ts"], raw_matrix(frame, features))

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> FeatureRows:
        return FeatureRows(
            self.symbols.slice(start, stop - start), self.ts.slice(start, stop - start), self.values[start:stop]
        )

    def take(self, mask: np.ndarray) -> FeatureRows:
        index = pl.Series(np.flatnonzero(mask))
        return FeatureRows(self.symbols.gather(index), self.ts.gather(index), self.values[mask])

    def frame(self, features: list[str]) -> pl.DataFrame:
        values = pl.from_numpy(self.values, schema=features, orient="row").with_columns(pl.col(features).fill_nan(None))
        return pl.concat([pl.DataFrame([self.symbols, self.ts]), values], how="horizontal")


_DAY = 86_400_000_000  # microseconds


def symbol_spacings(bars: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each symbol's median bar spacing (microseconds; 1 to 4 days counts as one day, as
    data/frequency.py infers it) and a row of that symbol, for `bars` sorted by symbol, ts;
    symbols with one bar are absent. Per symbol: in a batch, one request's hourly bars must not
    hide among daily ones. numpy: a polars query per request would cost ~10x as much."""
    ts = bars["ts"].to_numpy().view(np.int64)
    symbols = bars["symbol"].to_numpy()
    same = symbols[1:] == symbols[:-1]
    gaps, rows = np.diff(ts)[same], np.flatnonzero(same)
    owner = np.cumsum(~same)[same]  # which symbol each spacing belongs to
    order = np.lexsort((gaps, owner))
    gaps, owner, rows = gaps[order], owner[order], rows[order]
    if not len(owner):
        return owner, rows
    starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))  # np.r_ costs ~5x as much
    medians = gaps[starts + (np.diff(np.append(starts, len(owner))) - 1) // 2]  # the lower median
    return _daily(medians), rows[starts]


def _daily(micros: Any) -> Any:
    return np.where((micros >= _DAY) & (micros < 4 * _DAY), _DAY, micros)


def attempt(work: Any, *args: Any) -> Any:
    """work(*args), or the exception it raised: one request's failure stays that request's."""
    try:
        return work(*args)
    except Exception as exc:  # handed to that request's handler, which maps it to its status
        return exc


def bars_from_records(records: list[dict[str, Any]], label: str = "request") -> pl.DataFrame:
    """Canonical bars from long-format records (JSON), validated by the ingest rules; errors name the row."""
    if not records:
        raise DataError(f"{label}: no bars; send at least one bar per symbol")
    frame = pl.from_dicts(records, infer_schema_length=None)
    ts = frame["ts"]
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC", strict=False)
    frame = frame.with_columns(ts.cast(TS_DTYPE).alias("ts"))
    return validated(frame, label)


def validated(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """The ingest validation (data/schema.py) on bars that did not come from a file."""
    numeric = [c for c, d in frame.schema.items() if c not in ("symbol", "ts") and d != pl.String]
    frame = frame.with_columns(
        pl.col(numeric).cast(pl.Float64),
        pl.lit(0, pl.UInt32).alias(SRC),
        (pl.int_range(pl.len(), dtype=pl.UInt32) + 1).alias(LINE),
    )
    schema.validate(frame, [Origin(label, unit="row")])
    return schema.finalize(frame)[0]


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: timestamps as ISO 8601 with offset, NaN as null."""
    out = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"))
    floats = [c for c, d in out.schema.items() if d.is_float()]
    return out.with_columns(pl.col(floats).fill_nan(None)).to_dicts()


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12), initial=0.0))
