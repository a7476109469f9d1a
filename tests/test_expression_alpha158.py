"""Factors port over (issue 23 §1): Qlib's own Alpha158 formulas (qlib/contrib/data/loader.py,
Alpha158DL), pasted as `[features.expressions]`, give the values of the built-in alpha158 set once the
windows are full — the expression operators and the hand-written families agree, on one set of kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.features import REGISTRY, compute_features
from quant_cli.pipeline.lookback import agrees

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from expressions_alpha158 import pairs  # noqa: E402 - Qlib's formulas, shared with the benchmark

WINDOWS = (5, 20)
WARM = 25  # rows per symbol after which every window above is full


def test_qlib_alpha158_formulas_match_the_built_in_factors(small_panel: pl.DataFrame) -> None:
    chosen = pairs(WINDOWS)
    section = {
        "sets": [],
        "include": [builtin for builtin, _ in chosen.values()],
        "expressions": {name: formula for name, (_, formula) in chosen.items()},
    }
    table = compute_features(small_panel, REGISTRY.resolve(section).features)
    table = table.filter(pl.int_range(pl.len()).over("symbol") >= WARM)
    for name, (builtin, formula) in chosen.items():
        mine = table.get_column(name).fill_null(np.nan).to_numpy()
        theirs = table.get_column(builtin).fill_null(np.nan).to_numpy()
        scale = float(np.nanmedian(np.abs(theirs)))
        assert np.isfinite(theirs).sum() > 100, builtin
        assert agrees(mine, theirs, scale).all(), f"{formula} vs {builtin}"


@pytest.mark.parametrize("formula", ["Corr($close, Log($volume+1), 0)", "Ref($close, -1)/$close"])
def test_qlib_formulas_that_would_be_partial_or_future_are_refused(formula: str) -> None:
    """Qlib accepts both (N = 0 is an expanding window; -1 reads tomorrow); here they are refused."""
    from quant_cli.features.expression import ExpressionError, parse

    with pytest.raises(ExpressionError):
        parse("f", formula)
