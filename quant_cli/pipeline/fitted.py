"""FittedPipeline (DESIGN.md §6a): the one object that turns raw bars, or a run's feature table,
into model inputs.

It holds everything between the bar store and the model: the price adjustment, the feature
specs in order with the options they were built with (benchmark, bar spacing, staleness), the
lookback each needs, the preprocessing configuration and its state fit on training rows, the fill
policy and the symbol encoding the model applies. `fit(training rows)` fits the preprocessing;
`transform` applies it to bars (features computed by the same engine the feature store uses —
there is no second feature path) or to rows of a feature table. The run stores it as
`split/pipeline.json`; cross-validation folds fit an unfitted copy on each fold's training rows.

Model inputs are Float32: what LightGBM and torch consume, half the memory of Float64.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_cli.errors import RunError
from quant_cli.features import engine
from quant_cli.features.align import FeatureOptions
from quant_cli.features.registry import REGISTRY, Feature
from quant_cli.pipeline import lookback
from quant_cli.pipeline.adjust import Adjustment
from quant_cli.pipeline.preprocess import fit_preprocess, raw_matrix, transform, transform_matrix
from quant_cli.report import SILENT, Reporter

KEYS = ["symbol", "ts"]
MODEL_DTYPE = pl.Float32
FORMAT_VERSION = 1


def feature_lookback(feature: Feature) -> int:
    """Bars of history a feature's definition reads (its window, or its sources'); recursive
    features (EMA, Wilder) converge over more bars than this."""
    own = feature.window or 1
    return max([own, *(feature_lookback(s) for s in feature.sources)])


@dataclass
class FittedPipeline:
    features: list[str]
    preprocess: dict[str, Any]  # the [preprocess] section: scaler, fill, clip
    options: dict[str, Any] = field(default_factory=dict)  # benchmark, max_staleness, bar_spacing
    lookback: dict[str, int] = field(default_factory=dict)
    adjustment: Adjustment = field(default_factory=Adjustment)
    symbol_encoding: str = "none"
    unseen_symbols: str = "error"
    feature_version: str | None = None  # the feature-store fingerprint the table came from
    state: dict[str, Any] | None = None
    # Measured bars per feature after which a value computed from that many bars agrees with the
    # full-history value (pipeline/lookback.py); empty until measured (the bundle measures it).
    warmup: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: Any, features: list[str], options: FeatureOptions, adjustment: Adjustment,
                    feature_version: str | None = None) -> FittedPipeline:
        lookback = {f.name: feature_lookback(f) for f in engine.as_features(features)}
        return cls(
            features=list(features), preprocess=dict(recipe["preprocess"]),
            options={"benchmark": options.benchmark, "max_staleness": options.max_staleness, "bar_spacing": options.bar_spacing},
            lookback=lookback, adjustment=adjustment, symbol_encoding=recipe["model"]["symbol_encoding"],
            unseen_symbols=recipe["model"]["unseen_symbols"], feature_version=feature_version,
        )

    @property
    def max_lookback(self) -> int:
        return max(self.lookback.values(), default=1)

    @property
    def required_bars(self) -> int:
        """Bars per symbol a request must carry: the measured warm-up, else the definitions' windows."""
        return max(self.warmup.values(), default=self.max_lookback) if self.warmup else self.max_lookback

    def measure_lookback(self, bars: pl.DataFrame, reporter: Reporter = SILENT) -> lookback.Lookback:
        """Measure every feature's honest lookback on real bars and keep it (see pipeline/lookback.py)."""
        measured = lookback.measure(self, bars, reporter)
        self.warmup = dict(measured.bars)
        return measured

    @functools.cached_property
    def specs(self) -> list[Feature]:
        """The features as registry objects, looked up once (a served request must not re-resolve 158 names)."""
        return engine.as_features(self.features)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. to a worker process) without the cached registry objects: they are rebuilt there."""
        return {k: v for k, v in self.__dict__.items() if k != "specs"}

    def unfitted(self) -> FittedPipeline:
        return dataclasses.replace(self, state=None)

    def fit(self, rows: pl.DataFrame | pl.LazyFrame) -> FittedPipeline:
        """Fit the preprocessing on training rows (feature columns as Float32 model inputs)."""
        lazy = rows.lazy().select(pl.col(self.features).cast(MODEL_DTYPE))
        self.state = fit_preprocess(lazy, self.features, self.preprocess)
        return self

    def feature_options(self, benchmark_bars: pl.DataFrame | None = None) -> FeatureOptions:
        return FeatureOptions(benchmark=self.options.get("benchmark"), max_staleness=self.options.get("max_staleness"),
                              benchmark_bars=benchmark_bars, bar_spacing=self.options.get("bar_spacing"))

    def compute(self, bars: pl.DataFrame, benchmark_bars: pl.DataFrame | None = None, reporter: Reporter = SILENT) -> pl.DataFrame:
        """Raw features (symbol, ts, features...) of raw bars: adjusted, then the feature engine.

        The benchmark comes from `bars` when it is among them (adjusted like any symbol), else from
        `benchmark_bars` (ts, close), already adjusted as the feature store's are."""
        table = engine.compute_features(self.adjustment.apply(bars), self.specs, self.feature_options(benchmark_bars), reporter)
        missing = [f for f in self.features if f not in table.columns]
        if missing:
            raise RunError(f"the bars lack the inputs of {len(missing)} pipeline feature(s), e.g. {missing[:5]}; pass bars with the columns the run was trained on")
        return table

    def transform(self, data: pl.DataFrame | pl.LazyFrame, benchmark_bars: pl.DataFrame | None = None) -> pl.DataFrame:
        """Model inputs (symbol, ts, features as Float32, preprocessed; null where missing) of raw bars
        or feature-table rows: a frame view of `model_matrix`."""
        if self.state is None:
            raise RunError("the pipeline is not fitted; call fit(training rows) before transform()")
        return transform(self.feature_rows(data, benchmark_bars).select(*KEYS, *self.features), self.state)

    def model_matrix(self, data: pl.DataFrame | pl.LazyFrame, benchmark_bars: pl.DataFrame | None = None) -> np.ndarray:
        """(rows, features) float32 model inputs of raw bars or feature-table rows, preprocessed,
        NaN where missing, in the rows' order: what every model is fit on and scores."""
        return self.preprocess_matrix(raw_matrix(self.feature_rows(data, benchmark_bars), self.features))

    def preprocess_matrix(self, raw: np.ndarray) -> np.ndarray:
        """The fitted preprocessing of a raw feature matrix (float32, NaN where missing), in place."""
        if self.state is None:
            raise RunError("the pipeline is not fitted; call fit(training rows) before transform()")
        return transform_matrix(raw, self.state)

    def feature_rows(self, data: pl.DataFrame | pl.LazyFrame, benchmark_bars: pl.DataFrame | None) -> pl.DataFrame:
        """`data` itself when it holds the features (a feature table's rows), else the features of its bars."""
        data = data.collect() if isinstance(data, pl.LazyFrame) else data
        return data if set(data.columns).issuperset(self.features) else self.compute(data, benchmark_bars)  # a set: 158 lookups per served batch

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "features": self.features, "preprocess": self.preprocess,
            "options": self.options, "lookback": self.lookback, "adjustment": self.adjustment.to_json(),
            "symbol_encoding": self.symbol_encoding, "unseen_symbols": self.unseen_symbols,
            "feature_version": self.feature_version, "state": self.state, "dtype": "float32",
            "warmup": self.warmup,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FittedPipeline:
        if data.get("format_version") != FORMAT_VERSION:
            raise RunError(f"pipeline.json has format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}; it was written by another qfactory version")
        unknown = [f for f in data["features"] if not _known(f)]
        if unknown:
            raise RunError(f"pipeline.json names features this qfactory does not know: {unknown[:5]}")
        return cls(
            features=list(data["features"]), preprocess=dict(data["preprocess"]), options=dict(data["options"]),
            lookback={k: int(v) for k, v in data["lookback"].items()}, adjustment=Adjustment.from_json(data["adjustment"]),
            symbol_encoding=data["symbol_encoding"], unseen_symbols=data["unseen_symbols"],
            feature_version=data.get("feature_version"), state=data.get("state"),
            warmup={k: int(v) for k, v in data.get("warmup", {}).items()},
        )


def _known(name: str) -> bool:
    try:
        REGISTRY.feature(name)
    except KeyError:
        return False
    return True
