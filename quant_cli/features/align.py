"""Explicit, causal time alignment of a benchmark series onto every symbol's bars.

Assets trade on different calendars (holidays, halts, 24/7 crypto against an equity index). At a
symbol's bar t the benchmark value is the benchmark's LAST bar at or before t (forward fill,
`join_asof(strategy="backward")`), and only if that bar is at most `features.max_staleness` old;
older → null. Nothing is ever back-filled, so a benchmark bar after t can never reach t.

Default staleness: 5 bars of the data's frequency (5 days for daily bars, covering a long
weekend plus a holiday; 5 hours for hourly bars). Returns computed on the aligned series use the
symbol's own calendar: a benchmark holiday gives a zero benchmark return that day and a two-day
return the next, as with any forward-filled price.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_cli.data.frequency import infer_frequency, parse_duration, parse_frequency
from quant_cli.errors import DataError
from quant_cli.features.references import References

BENCHMARK_CLOSE = "benchmark_close"
DEFAULT_STALENESS_BARS = 5


@dataclass(frozen=True)
class FeatureOptions:
    """Run-level settings the features need beyond their own parameters.

    `benchmark_bars` (ts, close) supplies the benchmark when it is not among `bars` — a chunked
    build passes it to every chunk; `bar_spacing` pins the default staleness so every chunk agrees.
    `references` (features/references.py) are aligned like the benchmark; `reference_bars`
    (symbol, ts, close) supply them when they are not among `bars` (a build's pinned bars).
    """

    benchmark: str | None = None
    max_staleness: str | None = None
    benchmark_bars: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    bar_spacing: str | None = None
    references: References | None = None
    reference_bars: pl.DataFrame | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], home: str | None = None, **extra: Any) -> FeatureOptions:
        """`home`: the recipe's dataset (references naming it are same-dataset references)."""
        return cls(
            benchmark=section.get("benchmark"),
            max_staleness=section.get("max_staleness"),
            references=References.from_section(section.get("references"), home),
            **extra,
        )


def staleness(bars: pl.DataFrame, options: FeatureOptions) -> dt.timedelta:
    """The oldest benchmark bar that may stand in for the current one."""
    if options.max_staleness:
        return parse_duration(options.max_staleness, "features.max_staleness", "'5d'")
    spacing = options.bar_spacing or infer_frequency(bars.select("symbol", "ts")) or "1d"
    return DEFAULT_STALENESS_BARS * parse_frequency(spacing)


def benchmark_series(bars: pl.DataFrame, options: FeatureOptions) -> pl.DataFrame:
    """(ts, benchmark_close) of the benchmark symbol, sorted by time."""
    source = options.benchmark_bars
    if source is None:
        source = bars.filter(pl.col("symbol").cast(pl.String) == options.benchmark)
        if source.height == 0 and bars.height > 0:
            symbols = bars.get_column("symbol").unique().sort().head(5).to_list()
            raise DataError(
                f"features.benchmark: {options.benchmark!r} is not a symbol of the data "
                f"(e.g. {symbols}); set it to one that is"
            )
    return source.select(pl.col("ts"), pl.col("close").cast(pl.Float64).alias(BENCHMARK_CLOSE)).sort("ts")


def with_benchmark(lazy: pl.LazyFrame, bars: pl.DataFrame, options: FeatureOptions) -> pl.LazyFrame:
    """Add `benchmark_close`: the benchmark's last close at or before each bar, within the staleness bound."""
    bench = benchmark_series(bars, options).lazy()
    tolerance = staleness(bars, options)
    by_time = lazy.sort("ts", maintain_order=True)  # join_asof needs the left side sorted by time
    joined = by_time.join_asof(bench, on="ts", strategy="backward", tolerance=tolerance)
    return joined.sort("symbol", "ts", maintain_order=True)


def feature_options(
    section: Mapping[str, Any], manifest: Mapping[str, Any], load_bars: Any, load_references: Any = None
) -> FeatureOptions:
    """The options a build (or a serving pipeline) computes features with, from the `[features]`
    section and the dataset it reads: the benchmark's bars are loaded once (`load_bars(symbols=[...])`,
    e.g. a pinned Snapshot's) and staleness is pinned to the dataset's frequency. Reference bars
    come from `load_references` (another dataset's pinned snapshot), else from `load_bars`."""
    benchmark = section.get("benchmark")
    bench_bars = None
    if benchmark:
        if benchmark not in manifest["symbols"]:
            raise DataError(
                f"features.benchmark: {benchmark!r} is not a symbol of dataset "
                f"{manifest['dataset']!r} (e.g. {list(manifest['symbols'])[:5]}); set it "
                "to one that is"
            )
        bench_bars = load_bars(symbols=[benchmark]).select("ts", "close")
    options = FeatureOptions.from_section(
        section, manifest["dataset"], benchmark_bars=bench_bars, bar_spacing=manifest.get("frequency")
    )
    if options.references is None:
        return options
    loader = load_references if options.references.external else load_bars
    ref_bars = loader(symbols=options.references.symbols).select(pl.col("symbol").cast(pl.String), "ts", "close")
    return dataclasses.replace(options, reference_bars=ref_bars)
