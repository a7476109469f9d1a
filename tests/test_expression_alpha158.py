"""Factors port over (issue 23 §1): Qlib's own Alpha158 formulas (qlib/contrib/data/loader.py,
Alpha158DL), pasted as `[features.expressions]`, give the values of the built-in alpha158 set once the
windows are full — the expression operators and the hand-written families agree, on one set of kernels."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quant_cli.features import REGISTRY, compute_features
from quant_cli.pipeline.lookback import agrees

# Qlib's formula for each factor, with "%d" for the window (None: no window).
QLIB = {
    "KMID": "($close-$open)/$open",
    "KLEN": "($high-$low)/$open",
    "KMID2": "($close-$open)/($high-$low+1e-12)",
    "KUP": "($high-Greater($open, $close))/$open",
    "KUP2": "($high-Greater($open, $close))/($high-$low+1e-12)",
    "KLOW": "(Less($open, $close)-$low)/$open",
    "KSFT": "(2*$close-$high-$low)/$open",
    "OPEN0": "$open/$close",
    "ROC%d": "Ref($close, %d)/$close",
    "MA%d": "Mean($close, %d)/$close",
    "STD%d": "Std($close, %d)/$close",
    "BETA%d": "Slope($close, %d)/$close",
    "RSQR%d": "Rsquare($close, %d)",
    "RESI%d": "Resi($close, %d)/$close",
    "MAX%d": "Max($high, %d)/$close",
    "MIN%d": "Min($low, %d)/$close",
    "QTLU%d": "Quantile($close, %d, 0.8)/$close",
    "QTLD%d": "Quantile($close, %d, 0.2)/$close",
    "RANK%d": "Rank($close, %d)",
    "RSV%d": "($close-Min($low, %d))/(Max($high, %d)-Min($low, %d)+1e-12)",
    "IMAX%d": "IdxMax($high, %d)/%d",
    "IMIN%d": "IdxMin($low, %d)/%d",
    "IMXD%d": "(IdxMax($high, %d)-IdxMin($low, %d))/%d",
    "CORR%d": "Corr($close, Log($volume+1), %d)",
    "CORD%d": "Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), %d)",
    "CNTP%d": "Mean($close>Ref($close, 1), %d)",
    "CNTN%d": "Mean($close<Ref($close, 1), %d)",
    "SUMP%d": "Sum(Greater($close-Ref($close, 1), 0), %d)/(Sum(Abs($close-Ref($close, 1)), %d)+1e-12)",
    "SUMN%d": "Sum(Greater(Ref($close, 1)-$close, 0), %d)/(Sum(Abs($close-Ref($close, 1)), %d)+1e-12)",
    "VMA%d": "Mean($volume, %d)/($volume+1e-12)",
    "VSTD%d": "Std($volume, %d)/($volume+1e-12)",
    "WVMA%d": "Std(Abs($close/Ref($close, 1)-1)*$volume, %d)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, %d)+1e-12)",
    "VSUMP%d": "Sum(Greater($volume-Ref($volume, 1), 0), %d)/(Sum(Abs($volume-Ref($volume, 1)), %d)+1e-12)",
}
WINDOWS = (5, 20)
WARM = 25  # rows per symbol after which every window above is full


def _expressions() -> dict[str, tuple[str, str]]:
    """expression name -> (built-in feature name, formula)."""
    out = {}
    for name, formula in QLIB.items():
        for w in WINDOWS if "%d" in name else (None,):
            builtin = name % w if w else name
            out[f"q_{builtin}"] = (builtin, formula.replace("%d", str(w)) if w else formula)
    return out


def test_qlib_alpha158_formulas_match_the_built_in_factors(small_panel: pl.DataFrame) -> None:
    pairs = _expressions()
    section = {
        "sets": [],
        "include": [builtin for builtin, _ in pairs.values()],
        "expressions": {name: formula for name, (_, formula) in pairs.items()},
    }
    table = compute_features(small_panel, REGISTRY.resolve(section).features)
    table = table.filter(pl.int_range(pl.len()).over("symbol") >= WARM)
    for name, (builtin, formula) in pairs.items():
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
