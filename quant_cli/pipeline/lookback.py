"""Honest lookback (DESIGN.md §7, issue 12 §2-3): how many bars a scoring request must carry, and
which symbols it must include.

Rolling features are exact once they see `window` bars; recursive ones (EMA, Wilder RSI/ATR/ADX,
MACD) and multi-timeframe ones depend on all history and only converge. So the lookback is
*measured*, not read off the definition: for each feature, the number of bars `n` after which the
value at a symbol's last bar computed from only its last `n` bars agrees with the value computed
from the whole history to `TOLERANCE` relative (null agrees with null only). "Relative" is to the
larger of the value and the feature's typical size (its median absolute value over the history):
a correlation of 0.001 computed by sliding sums from two different starts differs by ~5e-12 in
float64 however long both histories are, which is no lack of history. The measurement
runs the pipeline's own feature path (adjustment, benchmark alignment, engine) on truncated
copies of real bars — every symbol truncated alike, the benchmark included — exactly what a
request with `n` bars per symbol computes.

Search: candidate lengths on a grid (every length up to 32, then steps of ~10%), evaluated from
the longest down; a feature's lookback is the shortest grid length from which every longer grid
length agrees. It is therefore at most ~10% above the true minimum, never below it on the grid.
A feature that still disagrees one grid step below the whole history has not converged within
that history: its lookback is the whole history and `converged` says so.

Panel models (sequence models, and ensembles with one): a score reads the window of the last
`seq_len` rows, each of which must be exact, so a request needs the features' warm-up plus
`seq_len - 1` bars — and, when the model reads raw-bar channels (quant_cli.features.bars: a 20-bar
volume z-score, coarse timeframes), their own lookback, measured the same way (`measure_channels`).

Cross-symbol inputs: features that read the benchmark need the benchmark symbol in a request, and
reference features (features.references) their reference symbols (each carrying the same number
of bars: a 7-day crypto reference's bars then span fewer days, which the measurement sees);
cross-sectional ones (`cs_*`, `mkt_rel_ret_*`, `sector_rel_ret_*`) compare symbols at one
timestamp, so a request must carry the whole universe the model was trained on (and `sector`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_cli.features import align, engine, references
from quant_cli.features.regime import HMM_FEATURE
from quant_cli.features.registry import Feature
from quant_cli.report import SILENT, Reporter

TOLERANCE = 1e-9
# Values this close to zero agree absolutely: a rolling sum over a different start can leave
# 1e-17 where the full history has 0.0, and no relative tolerance accepts that.
ABSOLUTE_FLOOR = 1e-12
_DENSE_UP_TO = 32
_STEP = 1.1


@dataclass
class Lookback:
    """Measured bars per feature, whether each converged, and the history it was measured on."""

    bars: dict[str, int]
    converged: dict[str, bool]
    history: int
    symbols: int = 0
    unconverged: list[str] = field(default_factory=list)

    @property
    def required(self) -> int:
        return max(self.bars.values(), default=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "bars": self.bars,
            "converged": self.converged,
            "history": self.history,
            "symbols": self.symbols,
            "required_bars": self.required,
            "tolerance": TOLERANCE,
            "absolute_floor": ABSOLUTE_FLOOR,
        }


def grid(history: int) -> list[int]:
    """Candidate lengths 1..history: dense at first, then ~10% steps, always ending at `history`."""
    out = list(range(1, min(_DENSE_UP_TO, history) + 1))
    n = float(_DENSE_UP_TO)
    while n < history:
        n = max(n * _STEP, n + 1)
        out.append(min(math.ceil(n), history))
    return sorted(set(out))


def tail_bars(bars: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each symbol's last `n` bars (by time)."""
    ordered = bars.sort("symbol", "ts", maintain_order=True)
    position = pl.int_range(pl.len(), dtype=pl.Int64).over("symbol")
    # Int64: pl.len() is unsigned, and len - n for a symbol shorter than n must not wrap around
    return ordered.filter(position >= pl.len().over("symbol").cast(pl.Int64) - n)


def agrees(values: np.ndarray, reference: np.ndarray, scale: np.ndarray | float = 0.0) -> np.ndarray:
    """Element-wise agreement to TOLERANCE relative to max(|reference|, scale) (ABSOLUTE_FLOOR near
    zero); NaN agrees with NaN only."""
    both_missing = np.isnan(values) & np.isnan(reference)
    size = np.maximum(np.abs(reference), scale)
    close = np.abs(values - reference) <= TOLERANCE * size + ABSOLUTE_FLOOR
    return both_missing | np.nan_to_num(close, nan=False).astype(bool)


def _features(pipeline: Any, bars: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """The pipeline's own feature path (adjustment, benchmark from the bars, engine, the fitted
    regime filter: a recursion over all history, measured like an EMA) for `names`."""
    wanted = set(names)
    specs = [f for f in pipeline.specs if f.name in wanted]
    adjusted, options = pipeline.engine_input(bars)
    table = engine.compute_features(adjusted, specs, options)
    return pipeline.with_regime(table) if HMM_FEATURE in names and pipeline.regime is not None else table


def _last(table: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """symbol + `names` at each symbol's last bar."""
    return table.group_by("symbol", maintain_order=True).last().sort("symbol").select("symbol", *names)


def _scale(table: pl.DataFrame, names: list[str]) -> np.ndarray:
    """Each feature's typical size: its median absolute value over the history (0 if all null)."""
    row = table.select(pl.col(names).abs().median().fill_null(0.0)).row(0)
    return np.asarray(row, dtype=np.float64)


def _matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    return frame.select(pl.col(names).cast(pl.Float64).fill_null(float("nan"))).to_numpy()


def measure(pipeline: Any, bars: pl.DataFrame, reporter: Reporter = SILENT) -> Lookback:
    """The lookback of every pipeline feature on `bars` (raw bars with every symbol a request needs)."""
    return _measure(
        lambda b, names: _features(pipeline, b, names), list(pipeline.features), bars, reporter, "feature(s)"
    )


def measure_channels(pipeline: Any, bars: pl.DataFrame, timeframes: list[str], reporter: Reporter = SILENT) -> Lookback:
    """The lookback of the raw-bar channels a sequence model reads (model.params.inputs = bars/both)
    on the pipeline's adjusted `bars`, measured exactly as the features' (quant_cli.features.bars)."""
    from quant_cli.features.bars import bar_channels, channel_names

    def compute(b: pl.DataFrame, names: list[str]) -> pl.DataFrame:
        return bar_channels(pipeline.adjustment.apply(b), timeframes).select("symbol", "ts", *names)

    return _measure(compute, channel_names(timeframes), bars, reporter, "raw-bar channel(s)")


def _measure(
    compute: Callable[[pl.DataFrame, list[str]], pl.DataFrame],
    names: list[str],
    bars: pl.DataFrame,
    reporter: Reporter,
    what: str,
) -> Lookback:
    """The grid search of the module doc over `compute(bars, names)` (symbol, ts, names)."""
    history = int(bars.group_by("symbol").len()["len"].max()) if bars.height else 0
    table = compute(bars, names)
    full, scale = _matrix(_last(table, names), names), _scale(table, names)
    del table
    candidates = grid(history)
    found = {name: history for name in names}
    open_ = list(names)  # features that agreed at every length tried so far
    with reporter.working(f"bundle: measuring the lookback of {len(names)} {what} on {history} bars"):
        for longer, n in zip(reversed(candidates), reversed(candidates[:-1])):
            if not open_:
                break
            found.update({name: longer for name in open_})
            index = [names.index(name) for name in open_]
            values = _matrix(_last(compute(tail_bars(bars, n), open_), open_), open_)
            ok = agrees(values, full[:, index], scale[index]).all(axis=0)
            open_ = [name for name, good in zip(open_, ok) if good]
        found.update({name: 1 for name in open_})  # agreed down to a single bar
    converged = {name: found[name] < history or history <= 1 for name in names}
    return Lookback(found, converged, history, bars["symbol"].n_unique(), [n for n, c in converged.items() if not c])


def model_window(model: Any) -> int:
    """Rows one score reads: the longest seq_len of the model and its ensemble members (1: the row alone)."""
    own = int(model.params.get("seq_len", 1)) if getattr(model, "sequence", False) else 1
    return max([own, *(model_window(m) for m in getattr(model, "members_", []))])


def channel_timeframes(model: Any) -> list[str] | None:
    """The [features] timeframes of the raw-bar channels a fitted model reads, read off the channel
    names it was fit on (bar_volume_z_<tf>); None when it reads no raw bars."""
    if not model.needs_bars():
        return None
    fitted = [
        getattr(model, "channels_", None) or [],
        *(getattr(m, "channels_", None) or [] for m in getattr(model, "members_", [])),
    ]
    names = next((c for c in fitted if c), [])
    return [c.removeprefix("bar_volume_z_") for c in names if c.startswith("bar_volume_z_")]


def request_bars(features: int, model: Any, channels: Lookback | None = None) -> int:
    """Bars per symbol a request must carry: the features' measured warm-up (`features`), or the
    raw-bar channels' if longer, plus the model's window less its last row."""
    return max(features, channels.required if channels is not None else 0) + model_window(model) - 1


def benchmark_symbol(pipeline: Any) -> str | None:
    """The benchmark symbol a request must include, when a feature reads it."""
    features = pipeline.specs
    reads = any(align.BENCHMARK_CLOSE in _inputs_of(f) for f in features)
    return pipeline.options.get("benchmark") if reads else None


def reference_symbols(pipeline: Any) -> list[str]:
    """The reference symbols (features.references) a request must include: those a feature reads,
    a group's members included."""
    refs = pipeline.references
    if refs is None:
        return []
    needed = {c for f in pipeline.specs for c in _inputs_of(f)}
    return references.needed_symbols(refs, needed)


def cross_sectional(pipeline: Any) -> list[str]:
    """The features computed across symbols at one timestamp (they need the whole universe)."""
    return [f.name for f in pipeline.specs if f.family.stage == 2]


def extra_keys(pipeline: Any) -> list[str]:
    """Non-price grouping columns a request must carry (e.g. `sector` for sector-relative features)."""
    keys = {k for f in pipeline.specs if f.family.stage == 2 for k in f.family.over_keys}
    return sorted(keys - {"symbol", "ts"})


def input_columns(pipeline: Any, trained_on: list[str]) -> list[str]:
    """Raw bar columns the features read, given the columns the training bars had: vwap is derived
    from high/low/close when training had none (else it is required, so serving reads what training
    read); the benchmark close comes from the benchmark symbol's bars."""
    reads = {c for f in pipeline.specs for c in _inputs_of(f)}
    columns = reads - {align.BENCHMARK_CLOSE}
    if pipeline.references is not None:  # aligned from the reference symbols' own close
        columns = (columns - pipeline.references.columns()) | {"close"}
    if "vwap" in reads and "vwap" not in trained_on:
        columns = (columns - {"vwap"}) | {"high", "low", "close"}
    order = ["open", "high", "low", "close", "volume"]
    return [c for c in order if c in columns] + sorted(columns - set(order))


def _inputs_of(feature: Feature) -> tuple[str, ...]:
    return feature.inputs
