"""A loaded, verified bundle: the one object batch predict and the server score with.

`score_bars` takes raw bars (long format, one or more symbols), checks them against the bundle's
input schema (columns, required symbols, the measured number of bars per symbol), computes the
features with the bundle's own FittedPipeline — the same code path training used, so there is no
train/serve skew — and scores with the model through its public API. `score_features` takes
precomputed (raw, not yet preprocessed) feature rows, as the run's feature table holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data import schema
from quant_cli.data.schema import LINE, SRC, TS_DTYPE, Origin
from quant_cli.errors import DataError
from quant_cli.models.base import Model
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.pipeline.preprocess import drop_incomplete

KEYS = ["symbol", "ts"]


@dataclass
class InputSpec:
    """What a request must carry (the bundle's input schema, in code)."""

    required_bars: int
    columns: list[str]  # raw bar columns besides symbol and ts
    required_symbols: list[str] = field(default_factory=list)
    why_symbols: str = ""
    keys: list[str] = field(default_factory=list)  # text columns such as sector

    def to_json(self) -> dict[str, Any]:
        return {"required_bars": self.required_bars, "columns": self.columns, "required_symbols": self.required_symbols,
                "why_symbols": self.why_symbols, "keys": self.keys}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(int(data["required_bars"]), list(data["columns"]), list(data["required_symbols"]),
                   data.get("why_symbols", ""), list(data.get("keys", [])))


@dataclass
class LoadedBundle:
    path: Path
    manifest: dict[str, Any]
    pipeline: FittedPipeline
    model: Model
    spec: InputSpec

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def output_columns(self) -> list[str]:
        probs = [f"p_{c:g}" for c in self.model.classes_] if self.model.is_classifier else []
        return ["symbol", "ts", "score", *probs]

    def metadata(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "manifest": self.manifest, "features": self.pipeline.features,
                "lookback": {"required_bars": self.spec.required_bars, "per_feature": self.pipeline.warmup},
                "model": {"name": self.model.name, "task": self.model.task,
                          "classes": self.model.classes_.tolist() if self.model.is_classifier else None},
                "input": self.spec.to_json(), "outputs": self.output_columns}

    # ---- raw bars --------------------------------------------------------------------------------

    def score_bars(self, bars: pl.DataFrame, every_bar: bool = False) -> pl.DataFrame:
        """Scores of each symbol's latest bar (or, `every_bar`, of every bar with enough history)."""
        self.check_bars(bars, every_bar)
        inputs = self.pipeline.transform(bars.sort(KEYS))
        position = pl.int_range(pl.len()).over("symbol")
        history = self.model.history()  # a sequence model's window reads this many earlier rows
        scored = self._score(inputs.filter(position >= self.spec.required_bars - 1 - history))
        scored = scored.filter(pl.int_range(pl.len()).over("symbol") >= history)  # the window's warm-up scores NaN
        return scored if every_bar else scored.group_by("symbol", maintain_order=True).last()

    def check_bars(self, bars: pl.DataFrame, every_bar: bool = False) -> None:
        missing = [c for c in ("symbol", "ts", *self.spec.columns, *self.spec.keys) if c not in bars.columns]
        if missing:
            raise DataError(f"the bars lack column {missing[0]!r}; this bundle reads columns {['symbol', 'ts', *self.spec.columns, *self.spec.keys]}")
        present = set(bars["symbol"].unique().to_list())
        absent = [s for s in self.spec.required_symbols if s not in present]
        if absent:
            raise DataError(f"the bars lack required symbol(s) {absent[:5]}{' and more' if len(absent) > 5 else ''} "
                            f"({self.spec.why_symbols}); include their bars")
        counts = bars.group_by("symbol").len().sort("len", "symbol")
        short = counts.filter(pl.col("len") < self.spec.required_bars)
        if short.height and (not every_bar or short.height == counts.height):
            symbol, n = short.row(0)
            raise DataError(f"symbol {symbol!r} has {n} bar(s); this bundle needs at least {self.spec.required_bars} bars per "
                            "symbol (its features' measured lookback); send more history")

    # ---- precomputed features -------------------------------------------------------------------

    def score_features(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Scores of feature rows (symbol, ts and every pipeline feature, raw as the feature table holds them)."""
        missing = [c for c in (*KEYS, *self.pipeline.features) if c not in rows.columns]
        if missing:
            raise DataError(f"the feature rows lack column {missing[0]!r}; this bundle reads {len(self.pipeline.features)} features "
                            "(GET /metadata lists them)")
        wanted = [*KEYS, *self.pipeline.features]
        return self._score(self.pipeline.transform(rows if rows.columns == wanted else rows.select(wanted)))

    # ---- the model ------------------------------------------------------------------------------

    def _score(self, inputs: pl.DataFrame) -> pl.DataFrame:
        inputs = drop_incomplete(inputs, self.pipeline.features, self.pipeline.preprocess.get("fill", ""))
        X = self.pipeline.matrix(inputs)
        symbols = inputs["symbol"].cast(pl.String)
        score = self.model.predict(X, symbols=symbols.to_numpy())
        out = pl.DataFrame([symbols, inputs["ts"], pl.Series("score", score, dtype=pl.Float64)])  # no query plan per request
        if self.model.is_classifier:
            proba = self.model.predict_proba(X, symbols=symbols)
            out = out.with_columns(pl.Series(f"p_{c:g}", proba[:, i]) for i, c in enumerate(self.model.classes_))
        return out


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
    frame = frame.with_columns(pl.col(numeric).cast(pl.Float64), pl.lit(0, pl.UInt32).alias(SRC),
                               (pl.int_range(pl.len(), dtype=pl.UInt32) + 1).alias(LINE))
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
