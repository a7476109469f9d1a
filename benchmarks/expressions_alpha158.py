"""Benchmark: Qlib's Alpha158 formulas as factor expressions vs the built-in alpha158 families, on the
same synthetic daily panel in the same process: both run on the same compiled kernels, the expressions
through the generic evaluator (features/expression_eval.py), the families through hand-fused code.

    .venv/bin/python benchmarks/expressions_alpha158.py                   # 300 symbols x 2,000 bars
    .venv/bin/python benchmarks/expressions_alpha158.py --symbols 50 --bars 500

The 133 features of QLIB below (every formula of Qlib's Alpha158DL that has a built-in twin, at
windows 5/10/20/30/60) are computed both ways; before any time is reported, the two tables are
checked to agree (lookback.agrees: 1e-9 relative to the larger of the value and the column's median
magnitude) once every window is full; the script exits 1 if they do not. Each side is timed as the
best of --repeat runs (wall clock of compute_features only), after one untimed warm-up call.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import polars as pl

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
WINDOWS = (5, 10, 20, 30, 60)


def pairs(windows: tuple[int, ...] = WINDOWS) -> dict[str, tuple[str, str]]:
    """expression name -> (built-in feature name, formula), one per formula and window."""
    out = {}
    for name, formula in QLIB.items():
        for w in windows if "%d" in name else (None,):
            builtin = name % w if w else name
            out[f"q_{builtin}"] = (builtin, formula.replace("%d", str(w)) if w else formula)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--bars", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from quant_cli.data.synthetic import generate
    from quant_cli.features import REGISTRY, compute_features
    from quant_cli.pipeline.lookback import agrees

    bars = generate(symbols=args.symbols, bars=args.bars, seed=7)
    chosen = pairs()
    builtin = REGISTRY.resolve({"sets": [], "include": [b for b, _ in chosen.values()]}).features
    expressions = REGISTRY.resolve({"sets": [], "expressions": {n: f for n, (_, f) in chosen.items()}}).features
    times, tables = {}, {}
    for side, features in (("built-in", builtin), ("expressions", expressions)):
        compute_features(bars.head(300), features)  # numba's cache load, untimed
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            tables[side] = compute_features(bars, features)
            best = min(best, time.perf_counter() - started)
        times[side] = best
    full = pl.int_range(pl.len()).over("symbol") >= max(WINDOWS) + 1
    mine, theirs = (tables[s].filter(full) for s in ("expressions", "built-in"))
    for name, (twin, formula) in chosen.items():
        a = mine.get_column(name).fill_null(np.nan).to_numpy()
        b = theirs.get_column(twin).fill_null(np.nan).to_numpy()
        if not agrees(a, b, float(np.nanmedian(np.abs(b)))).all():
            print(f"MISMATCH {formula} vs {twin}", file=sys.stderr)
            return 1
    rows = bars.height
    print(f"panel: {args.symbols} symbols x {args.bars} bars = {rows:,} rows; {len(chosen)} features; values agree")
    for side, seconds in times.items():
        print(f"{side:12s} {seconds:7.2f} s  ({rows * len(chosen) / seconds / 1e6:6.1f} M values/s)")
    print(f"expressions / built-in: {times['expressions'] / times['built-in']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
