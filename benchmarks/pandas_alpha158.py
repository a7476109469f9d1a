"""A straightforward pandas reference of the Alpha158 set, for benchmarks/features_alpha158.py.

Written the way a researcher would write it with pandas: `groupby("symbol").rolling(w)` for the
rolling statistics, per-symbol loops for two-series rolling correlations. Formulas follow
quant_cli/features/alpha158.py (Qlib's definitions, full windows only), so the benchmark can
check that both sides computed the same numbers before it compares their times.

Two places are deliberately faster than the most naive pandas (so the speed ratio is, if
anything, understated): IMAX/IMIN use a numpy sliding-window argmax per symbol instead of
`rolling().apply(np.argmax)` (a Python call per window, minutes on the benchmark panel), and
BETA uses rolling sums of t*x instead of `rolling().apply(np.polyfit)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12


def alpha158(df: pd.DataFrame, windows: tuple[int, ...] = WINDOWS) -> pd.DataFrame:
    """df: symbol, ts, open, high, low, close, volume sorted by (symbol, ts) with a RangeIndex."""
    c, o, h, l, v = (df[k] for k in ("close", "open", "high", "low", "volume"))
    out: dict[str, pd.Series] = _kbar(c, o, h, l)
    g = df.groupby("symbol", sort=False)
    position = g.cumcount().astype(float)  # bar number within the symbol, for the regression slope
    work = df.assign(
        t=position,
        tx=position * c,
        lv=np.log(v + 1.0),
        up=_masked(c > g["close"].shift(1), g["close"].shift(1)),
        down=_masked(c < g["close"].shift(1), g["close"].shift(1)),
        dc=g["close"].diff(),
        dv=g["volume"].diff(),
        rc=c / g["close"].shift(1),
        lvr=np.log(v / g["volume"].shift(1) + 1.0),
        wv=(c / g["close"].shift(1) - 1.0).abs() * v,
    )
    work = work.assign(
        gain_c=work.dc.clip(lower=0),
        loss_c=(-work.dc).clip(lower=0),
        abs_c=work.dc.abs(),
        gain_v=work.dv.clip(lower=0),
        loss_v=(-work.dv).clip(lower=0),
        abs_v=work.dv.abs(),
    )
    wg = work.groupby("symbol", sort=False)
    for w in windows:
        out.update(_window(work, wg, c, h, l, v, w))
    return pd.concat([df[["symbol", "ts"]], pd.DataFrame(out)], axis=1)


def _masked(flag: pd.Series, previous: pd.Series) -> pd.Series:
    """The up/down flag as 0/1, NaN on a symbol's first bar (no previous close to compare)."""
    return flag.astype(float).where(previous.notna())


def _kbar(c: pd.Series, o: pd.Series, h: pd.Series, l: pd.Series) -> dict[str, pd.Series]:
    rng = h - l + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    vwap = (h + l + c) / 3.0
    return {
        "KMID": (c - o) / o,
        "KLEN": (h - l) / o,
        "KMID2": (c - o) / rng,
        "KUP": (h - top) / o,
        "KUP2": (h - top) / rng,
        "KLOW": (bottom - l) / o,
        "KLOW2": (bottom - l) / rng,
        "KSFT": (2 * c - h - l) / o,
        "KSFT2": (2 * c - h - l) / rng,
        "OPEN0": o / c,
        "HIGH0": h / c,
        "LOW0": l / c,
        "VWAP0": vwap / c,
    }


def _roll(wg, column: str, w: int, op: str, *args) -> pd.Series:  # noqa: ANN001
    rolled = getattr(wg[column].rolling(w, min_periods=w), op)(*args)
    return rolled.reset_index(level=0, drop=True).sort_index()


def _window(work: pd.DataFrame, wg, c, h, l, v, w: int) -> dict[str, pd.Series]:  # noqa: ANN001, PLR0914
    ma, sd = _roll(wg, "close", w, "mean"), _roll(wg, "close", w, "std")
    sxx = w * (w * w - 1) / 12.0
    # slope = sum((t - mean t) x) / Sxx with mean t = t_now - (w - 1) / 2
    slope = (_roll(wg, "tx", w, "sum") - (work.t - (w - 1) / 2.0) * _roll(wg, "close", w, "sum")) / sxx
    hi, lo = _roll(wg, "high", w, "max"), _roll(wg, "low", w, "min")
    cntp, cntn = _roll(wg, "up", w, "mean"), _roll(wg, "down", w, "mean")
    moves_c, moves_v = _roll(wg, "abs_c", w, "sum") + EPS, _roll(wg, "abs_v", w, "sum") + EPS
    sump, sumn = _roll(wg, "gain_c", w, "sum") / moves_c, _roll(wg, "loss_c", w, "sum") / moves_c
    vsump, vsumn = _roll(wg, "gain_v", w, "sum") / moves_v, _roll(wg, "loss_v", w, "sum") / moves_v
    imax, imin = _argpos(work, "high", w, np.argmax), _argpos(work, "low", w, np.argmin)
    wv_mean = _roll(wg, "wv", w, "mean")
    f = {
        "ROC": wg["close"].shift(w) / c,
        "MA": ma / c,
        "STD": sd / c,
        "BETA": slope / c,
        "RSQR": slope**2 * sxx / ((w - 1) * sd**2),
        "RESI": 1 - ma / c - slope / c * (w - 1) / 2.0,
        "MAX": hi / c,
        "MIN": lo / c,
        "QTLU": _roll(wg, "close", w, "quantile", 0.8) / c,
        "QTLD": _roll(wg, "close", w, "quantile", 0.2) / c,
        "RANK": wg["close"].rolling(w, min_periods=w).rank(pct=True).reset_index(level=0, drop=True).sort_index(),
        "RSV": (c - lo) / (hi - lo + EPS),
        "IMAX": imax,
        "IMIN": imin,
        "IMXD": imax - imin,
        "CORR": _corr(work, "close", "lv", w),
        "CORD": _corr(work, "rc", "lvr", w),
        "CNTP": cntp,
        "CNTN": cntn,
        "CNTD": cntp - cntn,
        "SUMP": sump,
        "SUMN": sumn,
        "SUMD": sump - sumn,
        "VMA": _roll(wg, "volume", w, "mean") / (v + EPS),
        "VSTD": _roll(wg, "volume", w, "std") / (v + EPS),
        "WVMA": _roll(wg, "wv", w, "std") / (wv_mean + EPS),
        "VSUMP": vsump,
        "VSUMN": vsumn,
        "VSUMD": vsump - vsumn,
    }
    return {f"{name}{w}": series for name, series in f.items()}


def _corr(work: pd.DataFrame, x: str, y: str, w: int) -> pd.Series:
    parts = [grp[x].rolling(w, min_periods=w).corr(grp[y]) for _, grp in work.groupby("symbol", sort=False)]
    return pd.concat(parts).sort_index()


def _argpos(work: pd.DataFrame, column: str, w: int, arg) -> pd.Series:  # noqa: ANN001
    """Qlib IdxMax/IdxMin: 1-based position of the first extreme from the window's oldest bar, / w."""
    out = np.full(len(work), np.nan)
    for _, idx in work.groupby("symbol", sort=False).indices.items():
        values = work[column].to_numpy()[idx]
        if len(values) >= w:
            out[idx[w - 1 :]] = (arg(sliding_window_view(values, w), axis=1) + 1) / w
    return pd.Series(out, index=work.index)
