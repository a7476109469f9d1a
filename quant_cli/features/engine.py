"""Compute features on canonical bars: compiled kernels per symbol (stage 1), cross-sectional stage 2.

Output contract: columns `symbol, ts, <feature...>` (features Float64, in the order given), one
row per input bar, sorted by (symbol, ts). Warm-up rows are null; so is any value that comes out
non-finite (inf from x/0, NaN from 0/0) — downstream stages see null, never inf/NaN.

Stage 1: the (symbol, ts)-sorted bars become float64 arrays with per-symbol offsets
(features/panel.py) and every kernel family computes on them with the compiled rolling kernels
(features/kernels.py) — the same code for a whole panel and for one served window. Families still
written as polars expressions (none in the registry; tests' leaky features and the oracle of
tests/feature_oracle) run inside one `group_by("symbol").agg(...)` (features/grouped.py).
Multi-timeframe families run on resampled bars (features/mtf.py) and are joined back. Stage 2
(cross-sectional families, `over="ts"`) runs in polars on the stage-1 table, per timestamp.

Derived inputs: `vwap` is approximated by the typical price (high + low + close) / 3 when the
data has no `vwap` column (with a notice); `benchmark_close` is the benchmark symbol's close
aligned to each bar (features/align.py) when `features.benchmark` is set; `ref_close[S]` and
`ref_group_return[G]` are the reference symbols' aligned closes and the groups' one-bar returns
(features/references.py) when `features.references` names them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from quant_cli.errors import DataError
from quant_cli.features import align, mtf, references
from quant_cli.features.align import FeatureOptions
from quant_cli.features.grouped import per_symbol
from quant_cli.features.panel import kernel_columns
from quant_cli.features.registry import REGISTRY, Feature
from quant_cli.report import SILENT, Reporter

FeatureLike = Feature | str
KEYS = ("symbol", "ts")
_VWAP_PARTS = ("high", "low", "close")
# Every feature query runs on polars' in-memory engine: per-symbol windows run group by group
# there whatever engine is asked for, and "auto" spends ~25% of a served request's feature time
# (63 bars, 158 features) deciding so. One engine everywhere, so training and serving share kernels.
ENGINE = "in-memory"


def as_features(specs: Sequence[FeatureLike]) -> list[Feature]:
    """Accept Feature objects or concrete names (``ret_5``); unknown names → KeyError."""
    return [s if isinstance(s, Feature) else REGISTRY.feature(s) for s in specs]


def available_columns(columns: Sequence[str], options: FeatureOptions | None = None) -> set[str]:
    """Data columns plus the inputs the engine can derive from them."""
    present = set(columns)
    if "vwap" not in present and present.issuperset(_VWAP_PARTS):
        present.add("vwap")
    if options is not None and options.benchmark is not None and "close" in present:
        present.add(align.BENCHMARK_CLOSE)
    if options is not None and options.references is not None:
        present |= options.references.columns()
    return present


def split_available(
    features: Sequence[Feature], columns: Sequence[str], options: FeatureOptions | None = None
) -> tuple[list[Feature], dict[str, list[str]]]:
    """(features whose inputs are present or derivable, {feature name: missing columns} for the rest)."""
    present = available_columns(columns, options)
    kept: list[Feature] = []
    missing: dict[str, list[str]] = {}
    for feature in features:
        absent = [c for c in feature.inputs if c not in present]
        if absent:
            missing[feature.name] = absent
        else:
            kept.append(feature)
    return kept, missing


def skipped_message(missing: dict[str, list[str]]) -> str:
    """One line grouping skipped features by the columns they lack."""
    by_columns: dict[str, list[str]] = {}
    for name, absent in missing.items():
        by_columns.setdefault(", ".join(absent), []).append(name)
    groups = "; ".join(f"{', '.join(names)} (need {cols})" for cols, names in by_columns.items())
    hint = (
        f" ({align.BENCHMARK_CLOSE} needs features.benchmark)"
        if any(align.BENCHMARK_CLOSE in a for a in missing.values())
        else ""
    )
    if any(c.startswith("ref_") for a in missing.values() for c in a):
        hint += " (ref_* columns need the reference in features.references)"
    return f"skipped {len(missing)} feature(s) whose input columns are missing from the data: {groups}{hint}"


@dataclass(frozen=True)
class Plan:
    """What to compute, by kind: stage-1 features (selected + hidden sources) and stage 2."""

    stage1: list[Feature]  # dependency order: sources before the composites that read them
    stage2: list[Feature]
    names: list[str]  # the output columns, in order
    missing: dict[str, list[str]]

    @property
    def passthrough(self) -> list[str]:
        """Extra grouping columns stage 2 needs carried through stage 1 (e.g. `sector`)."""
        keys = {k for f in self.stage2 for k in f.family.over_keys}
        return sorted(keys - set(KEYS))

    @property
    def stage1_names(self) -> list[str]:
        return [f.name for f in self.stage1]

    def kind(self, kind: str) -> list[Feature]:
        """ "kernel" (compiled), or for polars families "grouped" (per symbol), "rows" (row-wise on
        inputs), "composite"; "coarse" (multi-timeframe, either kind)."""
        return self._kinds.get(kind, [])

    @functools.cached_property
    def _kinds(self) -> dict[str, list[Feature]]:
        kinds: dict[str, list[Feature]] = {}
        for feature in self.stage1:
            kinds.setdefault(_kind(feature), []).append(feature)
        return kinds


def _kind(feature: Feature) -> str:
    family = feature.family
    if family.timeframed:
        return "coarse"
    if family.kernel:
        return "kernel"
    if family.over == "row":
        return "composite" if family.sources else "rows"
    return "grouped"


def plan(specs: Sequence[FeatureLike], columns: Sequence[str], options: FeatureOptions | None = None) -> Plan:
    """What to compute for `specs` on bars with `columns` (cached: a server plans the same request shape
    over and over; a Plan is never modified)."""
    benchmark = options is not None and options.benchmark is not None
    return _plan(tuple(specs), tuple(columns), benchmark, None if options is None else options.references)


@functools.lru_cache(maxsize=256)
def _plan(
    specs: tuple[FeatureLike, ...], columns: tuple[str, ...], benchmark: bool, refs: references.References | None
) -> Plan:
    # only the benchmark's presence and the references' names matter here
    options = FeatureOptions(benchmark="benchmark" if benchmark else None, references=refs)
    features, missing = split_available(as_features(specs), columns, options)
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate feature names in {names}")
    stage1: dict[str, Feature] = {}
    for feature in features:
        if feature.family.stage == 1:
            _add_with_sources(stage1, feature)
        else:
            for source in feature.sources:  # sources the recipe did not select are computed, then dropped
                _add_with_sources(stage1, source)
    return Plan(list(stage1.values()), [f for f in features if f.family.stage == 2], names, missing)


def _add_with_sources(stage1: dict[str, Feature], feature: Feature) -> None:
    for source in feature.sources:
        if source.family.composite:
            raise ValueError(
                f"{feature.name}: composite source {source.name!r} is not supported; build it from per-symbol features"
            )
        _add_with_sources(stage1, source)
    stage1.setdefault(feature.name, feature)


def compute_features(
    bars: pl.DataFrame, specs: Sequence[FeatureLike], options: FeatureOptions | None = None, reporter: Reporter = SILENT
) -> pl.DataFrame:
    """Feature table for `bars`; features lacking input columns are skipped with one notice."""
    check_bars(bars)
    todo = plan(specs, bars.columns, options)
    announce(todo, bars.columns, reporter)
    first = stage1(bars, todo, options).collect(engine=ENGINE)
    return finish(stage2(first.lazy(), todo), todo).collect(engine=ENGINE)


def announce(todo: Plan, columns: Sequence[str], reporter: Reporter = SILENT) -> None:
    """The build's notices, once per build (a chunked build runs stage 1 once per symbol group)."""
    if todo.missing:
        reporter.notice(skipped_message(todo.missing))
    if "vwap" not in columns and any("vwap" in f.inputs for f in todo.stage1):
        reporter.notice("no vwap column: VWAP-based features use the typical price (high + low + close) / 3")


def check_bars(bars: pl.DataFrame | pl.LazyFrame) -> None:
    columns = bars.collect_schema().names() if isinstance(bars, pl.LazyFrame) else bars.columns
    for column in KEYS:
        if column not in columns:
            raise DataError(f"bars have no {column!r} column; features need canonical bars (symbol, ts, close, ...)")


def stage1(bars: pl.DataFrame, todo: Plan, options: FeatureOptions | None = None) -> pl.LazyFrame:
    """symbol, ts, passthrough columns and every stage-1 feature, sorted by (symbol, ts)."""
    inputs = sorted({c for f in todo.stage1 for c in f.inputs} & set(bars.columns))
    lazy = bars.lazy().sort(*KEYS, maintain_order=True)  # windows must run in time order
    inputs = [c for c in inputs if bars.schema[c] != pl.String]  # text inputs (sector) are group keys, not numbers
    lazy = lazy.with_columns(pl.col(inputs).cast(pl.Float64)) if inputs else lazy
    frame = _derive_inputs(lazy, bars, todo, options).collect(engine=ENGINE)
    if options is not None and options.references is not None:
        frame = references.with_group_returns(frame, options.references, {c for f in todo.stage1 for c in f.inputs})
    pieces = [frame.select(*KEYS, *todo.passthrough), kernel_columns(frame, todo.kind("kernel"))]
    grouped = todo.kind("grouped")
    if grouped:
        pieces.append(per_symbol(frame.lazy(), [_expr(f) for f in grouped]).drop(*KEYS).collect(engine=ENGINE))
    # Row-wise polars features (and the raw inputs polars composites read) need no grouping.
    raw = sorted({c for f in todo.kind("composite") for c in f.family.inputs} - set(todo.passthrough))
    rows = todo.kind("rows")
    if raw or rows:
        pieces.append(frame.select(*raw, *(_expr(f) for f in rows)))
    out = pl.concat(pieces, how="horizontal").lazy()
    for timeframe, group in mtf.by_timeframe(todo.kind("coarse")).items():
        out = mtf.join_coarse(out, frame.lazy(), timeframe, group)
    composites = todo.kind("composite")
    out = out.with_columns(_expr(f) for f in composites) if composites else out
    return out.select(*KEYS, *todo.passthrough, *todo.stage1_names)


@functools.lru_cache(maxsize=8192)
def _expr(feature: Feature) -> pl.Expr:
    """Built once per feature: expressions are immutable, and building 158 of them per call is most
    of the cost of scoring one small request (the server calls this per request)."""
    return feature.expr().cast(pl.Float64).alias(feature.name)


def _derive_inputs(lazy: pl.LazyFrame, bars: pl.DataFrame, todo: Plan, options: FeatureOptions | None) -> pl.LazyFrame:
    needed = {c for f in todo.stage1 for c in f.inputs}
    if "vwap" in needed and "vwap" not in bars.columns:  # announced once by `announce`
        lazy = lazy.with_columns(((pl.col("high") + pl.col("low") + pl.col("close")) / 3.0).alias("vwap"))
    if align.BENCHMARK_CLOSE in needed and options is not None:
        lazy = align.with_benchmark(lazy, bars, options)
    symbols = references.needed_symbols(options.references, needed) if options and options.references else []
    if symbols:
        refs = references.series(bars, options.reference_bars, symbols)
        lazy = references.with_aligned(lazy, refs, align.staleness(bars, options))
    helpers = sorted({d for f in todo.stage1 for d in f.family.derived})
    return lazy.with_columns(REGISTRY.derived[d].alias(d) for d in helpers) if helpers else lazy


def stage2(first: pl.LazyFrame, todo: Plan) -> pl.LazyFrame:
    """Cross-sectional families over same-timestamp rows of the stage-1 table (row order kept)."""
    if not todo.stage2:
        return first
    return first.with_columns(f.expr().over(f.family.over_keys).cast(pl.Float64).alias(f.name) for f in todo.stage2)


def finish(frame: pl.LazyFrame, todo: Plan) -> pl.LazyFrame:
    """The output contract: keys then the requested features in order, non-finite → null."""
    return frame.select(*KEYS, *(_finite_or_null(n) for n in todo.names))


@functools.lru_cache(maxsize=8192)
def _finite_or_null(name: str) -> pl.Expr:
    column = pl.col(name)
    return pl.when(column.is_finite()).then(column).otherwise(None).alias(name)
