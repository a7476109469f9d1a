"""Causality of plugin factors, proven on the dataset's own bars before a plugin feature is built.

A plugin is arbitrary code, so its causality cannot be read off its source: it is measured. For a
few symbols (the longest histories) the factors are computed on the bars as they are, then again
with every bar after a cutoff rewritten (prices by one random factor per bar, so a bar stays a valid
bar; volume and other columns by another); every value at or before the cutoff must be unchanged.
Cutoffs sit at rows 1, 3, 7, 15, ... (early ones catch a backward fill of a warm-up) and at a
quarter, half and three quarters of the history. This catches `shift(-n)`, centred windows,
whole-series statistics (a z-score over the full series) and backward fills.

The computation goes through the feature engine, as the build does. QFACTORY_TESTS_SKIP_PLUGIN_CHECK=1
skips the check: it exists for tests only (to make a leaky run the audit must catch), and a feature
version built without the check gets its own fingerprint, so no checked build ever reuses it. The
audit's refits on rewritten bars (in a private data home) skip it too (`audited`): the audit checks
look-ahead itself and reports a leak as its verdict.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

from quant_cli.errors import RecipeError
from quant_cli.features import engine
from quant_cli.features.align import FeatureOptions
from quant_cli.features.registry import Feature

SKIP_ENV = "QFACTORY_TESTS_SKIP_PLUGIN_CHECK"  # for tests only: never set it for real work
SYMBOLS = 3
PRICES = ("open", "high", "low", "close", "vwap", "adj_close")
RTOL, ATOL = 1e-9, 1e-12


# Set while `qfactory audit` refits a run on rewritten bars: the audit measures look-ahead end to end
# itself, so a leaky plugin shows as a failed audit check (exit 3), not as a refused refit.
_AUDITING: contextvars.ContextVar[bool] = contextvars.ContextVar("qfactory_plugin_check_audited", default=False)


def skipped() -> bool:
    """The test-only switch is set, or an audit's refit is building (see the module doc)."""
    return _AUDITING.get() or os.environ.get(SKIP_ENV, "") not in ("", "0")


@contextlib.contextmanager
def audited() -> Iterator[None]:
    """Builds inside skip the check: for the audit's private refits only (audit/training.py)."""
    token = _AUDITING.set(True)
    try:
        yield
    finally:
        _AUDITING.reset(token)


def check_symbols(rows_per_symbol: dict[str, int]) -> list[str]:
    """The symbols the check runs on: the SYMBOLS longest histories."""
    return sorted(rows_per_symbol, key=lambda s: (-rows_per_symbol[s], s))[:SYMBOLS]


def cutoffs(rows: int) -> list[int]:
    """Row positions to rewrite after: 1, 3, 7, 15, ... and the quartiles, each leaving a later bar."""
    early = [2**k - 1 for k in range(1, 64) if 2**k - 1 < rows - 1]
    return sorted({*early, *(rows * q // 4 for q in (1, 2, 3) if 0 < rows * q // 4 < rows - 1)})


def rewrite_after(bars: pl.DataFrame, row: int, seed: int) -> pl.DataFrame:
    """One symbol's bars with every bar after position `row` rewritten (module doc)."""
    rng = np.random.default_rng(seed)
    later = np.arange(bars.height) > row
    price = np.where(later, np.exp(rng.normal(0.0, 0.1, bars.height)), 1.0)
    other = np.where(later, np.exp(rng.normal(0.0, 0.5, bars.height)), 1.0)
    numeric = [c for c, dtype in bars.schema.items() if dtype.is_numeric()]
    return bars.with_columns(
        (pl.col(c) * pl.Series(price if c in PRICES else other)).cast(bars.schema[c]).alias(c) for c in numeric
    )


def check_causal(features: Sequence[Feature], bars: pl.DataFrame, options: FeatureOptions | None = None) -> None:
    """Raise a RecipeError naming the first plugin feature whose past moves with a rewritten future."""
    if not features:
        return
    for seed, own in enumerate(bars.sort("symbol", "ts").partition_by("symbol", maintain_order=True)):
        original = engine.compute_features(own, features, options)
        for cut in cutoffs(own.height):
            moved = engine.compute_features(rewrite_after(own, cut, seed), features, options)
            _compare(features, original.head(cut + 1), moved.head(cut + 1), own["ts"][cut])


def _compare(features: Sequence[Feature], before: pl.DataFrame, after: pl.DataFrame, cutoff: object) -> None:
    for feature in features:
        if feature.name not in before.columns:  # skipped for missing inputs (announced by the build)
            continue
        a = before[feature.name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        b = after[feature.name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        same = np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            plugin = feature.family.plugin.rsplit(":", 1)[0] if feature.family.plugin else "?"
            raise RecipeError(
                f"plugin {plugin}: factor {feature.name!r} reads the future: its value at "
                f"{before['ts'][row].isoformat()} ({before['symbol'][row]}) changed when the bars after "
                f"{cutoff.isoformat()} were rewritten; a factor may use only bars at or before each row "
                "(no shift(-n), centred windows, whole-series statistics or backward fills)"
            )
