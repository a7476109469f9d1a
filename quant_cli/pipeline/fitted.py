"""FittedPipeline (DESIGN.md §6a): the one object that turns raw bars, or a run's feature table,
into model inputs.

It holds everything between the bar store and the model: the price adjustment, the feature
specs in order with the options they were built with (benchmark, bar spacing, staleness), the
lookback each needs, the preprocessing configuration and its state fit on training rows, the fill
policy and the symbol encoding the model applies. `fit(training rows)` fits the preprocessing;
`transform` applies it to bars (features computed by the same engine the feature store uses —
there is no second feature path) or to rows of a feature table. The run stores it as
`split/pipeline.json`; cross-validation folds fit an unfitted copy on each fold's training rows.

Fitted features: the regime set's `regime_hmm_p_high` (features/regime.py) is a hidden Markov
model fit on training rows, so the feature table holds only its observation (the log return).
`fit` fits the model beside the scalers and `with_regime` turns the observation column into the
filtered probabilities over each symbol's history: `compute` (bars: serving, batch predict,
bundles) applies it, and the run's table readers (dataset/table.py) apply it to the whole
history of the table before picking rows, so training, folds and serving filter alike.

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
from quant_cli.features import engine, plugins
from quant_cli.features.align import FeatureOptions
from quant_cli.features.expression import ExpressionError, parse
from quant_cli.features.expression_eval import features_for
from quant_cli.features.references import References, reference_only
from quant_cli.features.regime import HMM_FEATURE
from quant_cli.features.registry import REGISTRY, Feature, feature_lookback
from quant_cli.pipeline import lookback
from quant_cli.pipeline.adjust import Adjustment
from quant_cli.pipeline.preprocess import fit_preprocess, raw_matrix, transform, transform_matrix
from quant_cli.pipeline.regime import GaussianHMM, filtered, fit_hmm
from quant_cli.report import SILENT, Reporter

KEYS = ["symbol", "ts"]
MODEL_DTYPE = pl.Float32
FORMAT_VERSION = 1


@dataclass
class FittedPipeline:
    features: list[str]
    preprocess: dict[str, Any]  # the [preprocess] section: scaler, fill, clip
    options: dict[str, Any] = field(default_factory=dict)  # benchmark, max_staleness, bar_spacing, references
    lookback: dict[str, int] = field(default_factory=dict)
    adjustment: Adjustment = field(default_factory=Adjustment)
    symbol_encoding: str = "none"
    unseen_symbols: str = "error"
    feature_version: str | None = None  # the feature-store fingerprint the table came from
    # The factor plugins' sources its features need (features/plugins.py), carried so that a continued
    # run, a worker process and a bundle compute them with the code the run was built with.
    plugins: list[dict[str, str]] = field(default_factory=list)
    state: dict[str, Any] | None = None
    # Measured bars per feature after which a value computed from that many bars agrees with the
    # full-history value (pipeline/lookback.py); empty until measured (the bundle measures it).
    warmup: dict[str, int] = field(default_factory=dict)
    regime: dict[str, Any] | None = None  # the fitted regime HMM (pipeline/regime.py) when HMM_FEATURE is a feature
    # Factor expressions among the features (name -> formula, features/expression.py): a bundle
    # carries them and serving recomputes them from this text.
    expressions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_recipe(
        cls,
        recipe: Any,
        features: list[str],
        options: FeatureOptions,
        adjustment: Adjustment,
        feature_version: str | None = None,
    ) -> FittedPipeline:
        table = recipe["features"].get("expressions") or {}
        expressions = {name: table[name] for name in features if name in table}
        lookback = {f.name: feature_lookback(f) for f in features_for(features, expressions)}
        return cls(
            features=list(features),
            preprocess=dict(recipe["preprocess"]),
            options={
                "benchmark": options.benchmark,
                "max_staleness": options.max_staleness,
                "bar_spacing": options.bar_spacing,
                "references": None if options.references is None else options.references.to_json(),
            },
            lookback=lookback,
            adjustment=adjustment,
            plugins=[p.to_json() for p in plugins.carried(features)],
            symbol_encoding=recipe["model"]["symbol_encoding"],
            unseen_symbols=recipe["model"]["unseen_symbols"],
            feature_version=feature_version,
            expressions=expressions,
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
        for feature in self.specs:  # a plugin's declared window is honoured even where it converges sooner
            if feature.family.plugin is not None:
                self.warmup[feature.name] = max(self.warmup.get(feature.name, 1), self.lookback[feature.name])
        return measured

    @functools.cached_property
    def specs(self) -> list[Feature]:
        """The features as registry objects, looked up once (a served request must not re-resolve 158 names)."""
        return features_for(self.features, self.expressions)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. to a worker process) without the cached registry objects: they are rebuilt there."""
        return {k: v for k, v in self.__dict__.items() if k not in ("specs", "references")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled in a worker process: the carried plugins register there before any feature is looked up."""
        self.__dict__.update(state)
        activate_carried(self.plugins, "pipeline")

    def unfitted(self) -> FittedPipeline:
        return dataclasses.replace(self, state=None, regime=None)

    @property
    def fits_regime(self) -> bool:
        """The features include the fitted regime HMM (its column must be filtered before use)."""
        return HMM_FEATURE in self.features

    def fit(self, rows: pl.DataFrame | pl.LazyFrame) -> FittedPipeline:
        """Fit the preprocessing on training rows (feature columns as Float32 model inputs).

        With the regime HMM: the HMM is fit on the training rows' returns first, and the scaler
        sees its filtered probabilities over those same rows (training rows only, both)."""
        lazy = rows.lazy()
        if self.fits_regime:
            observed = lazy.select(*KEYS, pl.col(HMM_FEATURE).cast(pl.Float64)).collect()
            self.regime = fit_hmm(_sequences(observed.sort(KEYS))).to_json()
            probabilities = self.with_regime(observed)
            lazy = lazy.drop(HMM_FEATURE).join(probabilities.lazy(), on=KEYS, how="left")
        inputs = lazy.select(pl.col(self.features).cast(MODEL_DTYPE))
        self.state = fit_preprocess(inputs, self.features, self.preprocess)
        return self

    def with_regime(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` (symbol, ts, HMM_FEATURE holding log returns, ... — every bar of each symbol's
        history, any order) with HMM_FEATURE replaced by the filtered high-volatility probability:
        the forward algorithm over each symbol's rows in time order, never smoothed."""
        if not self.fits_regime:
            return frame
        if self.regime is None:
            raise RunError("the pipeline is not fitted; call fit(training rows) before computing its regime feature")
        ordered = frame.with_row_index("_order").sort(KEYS)
        sequences = _sequences(ordered)
        probabilities = filtered(GaussianHMM.from_json(self.regime), sequences)
        values = np.concatenate(probabilities) if probabilities else np.zeros(0)
        observed = ~np.isnan(np.concatenate(sequences)) if sequences else np.zeros(0, bool)
        # no return (a symbol's first bar): null, as the feature table has it
        values = pl.Series(HMM_FEATURE, np.where(observed, values, np.nan)).fill_nan(None)
        ordered = ordered.with_columns(values.cast(frame.schema[HMM_FEATURE]))
        return ordered.sort("_order").drop("_order")

    def feature_options(self, benchmark_bars: pl.DataFrame | None = None) -> FeatureOptions:
        return FeatureOptions(
            benchmark=self.options.get("benchmark"),
            max_staleness=self.options.get("max_staleness"),
            benchmark_bars=benchmark_bars,
            bar_spacing=self.options.get("bar_spacing"),
            references=self.references,
        )

    @functools.cached_property
    def references(self) -> References | None:
        """The `[features.references]` groups the features were built with (features/references.py)."""
        return References.from_json(self.options.get("references"))

    def engine_input(
        self, bars: pl.DataFrame, benchmark_bars: pl.DataFrame | None = None
    ) -> tuple[pl.DataFrame, FeatureOptions]:
        """(adjusted bars of the symbols to compute features for, the options to compute them with):
        references from another dataset are inputs, not scored symbols, so their bars leave the
        frame and go in as the options' reference bars; same-dataset references stay, as in training."""
        adjusted, refs = reference_only(self.adjustment.apply(bars), self.references)
        options = self.feature_options(benchmark_bars)
        if refs is not None:
            options = dataclasses.replace(options, reference_bars=refs)
        return adjusted, options

    def compute(
        self, bars: pl.DataFrame, benchmark_bars: pl.DataFrame | None = None, reporter: Reporter = SILENT
    ) -> pl.DataFrame:
        """Raw features (symbol, ts, features...) of raw bars: adjusted, then the feature engine.

        The benchmark comes from `bars` when it is among them (adjusted like any symbol), else from
        `benchmark_bars` (ts, close), already adjusted as the feature store's are."""
        adjusted, options = self.engine_input(bars, benchmark_bars)
        table = engine.compute_features(adjusted, self.specs, options, reporter)
        table = self.with_regime(table) if self.fits_regime and HMM_FEATURE in table.columns else table
        missing = [f for f in self.features if f not in table.columns]
        if missing:
            raise RunError(
                f"the bars lack the inputs of {len(missing)} pipeline feature(s), e.g. "
                f"{missing[:5]}; pass bars with the columns the run was trained on"
            )
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
        return (
            data if set(data.columns).issuperset(self.features) else self.compute(data, benchmark_bars)
        )  # a set: 158 lookups per served batch

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "features": self.features,
            "preprocess": self.preprocess,
            "options": self.options,
            "lookback": self.lookback,
            "adjustment": self.adjustment.to_json(),
            "symbol_encoding": self.symbol_encoding,
            "unseen_symbols": self.unseen_symbols,
            "feature_version": self.feature_version,
            **({"plugins": self.plugins} if self.plugins else {}),
            "state": self.state,
            "dtype": "float32",
            "warmup": self.warmup,
            "regime": self.regime,
            "expressions": self.expressions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FittedPipeline:
        carried = list(data.get("plugins") or [])
        activate_carried(carried, "pipeline.json")  # callers that load untrusted bundles check first
        if data.get("format_version") != FORMAT_VERSION:
            raise RunError(
                f"pipeline.json has format_version {data.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}; it was written by another qfactory version"
            )
        expressions = {str(k): str(v) for k, v in (data.get("expressions") or {}).items()}
        _check_expressions(expressions)
        unknown = [f for f in data["features"] if f not in expressions and not _known(f)]
        if unknown:
            raise RunError(f"pipeline.json names features this qfactory does not know: {unknown[:5]}")
        return cls(
            features=list(data["features"]),
            preprocess=dict(data["preprocess"]),
            options=dict(data["options"]),
            lookback={k: int(v) for k, v in data["lookback"].items()},
            adjustment=Adjustment.from_json(data["adjustment"]),
            symbol_encoding=data["symbol_encoding"],
            unseen_symbols=data["unseen_symbols"],
            feature_version=data.get("feature_version"),
            plugins=carried,
            state=data.get("state"),
            warmup={k: int(v) for k, v in data.get("warmup", {}).items()},
            regime=data.get("regime"),
            expressions=expressions,
        )


def _sequences(ordered: pl.DataFrame) -> list[np.ndarray]:
    """HMM_FEATURE of `ordered` (sorted by symbol, ts) as one float64 array per symbol, NaN where null."""
    values = ordered.get_column(HMM_FEATURE).cast(pl.Float64).fill_null(float("nan")).to_numpy()
    counts = ordered.group_by("symbol", maintain_order=True).len().get_column("len").to_numpy()
    return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


def _check_expressions(expressions: dict[str, str]) -> None:
    """A stored expression is parsed (and its causality checked) again: pipeline.json is input too."""
    for name, text in expressions.items():
        try:
            parse(name, text)
        except ExpressionError as exc:
            raise RunError(f"pipeline.json: {exc}") from None


def _known(name: str) -> bool:
    try:
        REGISTRY.feature(name)
    except KeyError:
        return False
    return True


def activate_carried(carried: list[dict[str, str]], where: str) -> None:
    """Register the factor plugins a pipeline carries (their text is checked against its SHA-256)."""
    if carried:
        plugins.activate([plugins.PluginSource.from_json(p, where) for p in carried])
