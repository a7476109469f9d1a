"""Factor expression values (issue 23 §1) against a hand-written numpy/scipy reference, operator by
operator, on a small two-symbol panel with missing values: one loop per window, written from each
operator's definition (docs/expressions.md), independent of the compiled kernels it checks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from quant_cli.features import compute_features
from quant_cli.features.expression_eval import expression_feature

N = 40  # bars per symbol


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    frames = []
    for s, n in (("A", N), ("B", N - 7)):  # different lengths: nothing may cross the symbol boundary
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        openp = close * np.exp(rng.normal(0, 0.01, n))
        volume = rng.integers(0, 5, n).astype(float) * 1000.0  # zeros: Log($volume) is -inf → null
        close[[9, 25]] = np.nan  # missing closes: every window holding one is missing
        volume[17] = np.nan
        ts = [dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=i) for i in range(n)]
        frames.append(pl.DataFrame({"symbol": s, "ts": ts, "open": openp, "close": close, "volume": volume}))
    return pl.concat(frames).with_columns(pl.col("close").fill_nan(None))


def _per_symbol(panel: pl.DataFrame, column: str) -> list[np.ndarray]:
    return [
        g.get_column(column).cast(pl.Float64).fill_null(np.nan).to_numpy()
        for _, g in panel.group_by("symbol", maintain_order=True)
    ]


def _rolling(x: np.ndarray, w: int, fn) -> np.ndarray:  # noqa: ANN001
    out = np.full(len(x), np.nan)
    for t in range(w - 1, len(x)):
        window = x[t - w + 1 : t + 1]
        if np.isfinite(window).all():
            out[t] = fn(window)
    return out


def _pair(x: np.ndarray, y: np.ndarray, w: int, fn) -> np.ndarray:  # noqa: ANN001
    out = np.full(len(x), np.nan)
    for t in range(w - 1, len(x)):
        a, b = x[t - w + 1 : t + 1], y[t - w + 1 : t + 1]
        if np.isfinite(a).all() and np.isfinite(b).all():
            out[t] = fn(a, b)
    return out


def _shift(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([np.full(n, np.nan), x[: len(x) - n]]) if n else x


def _slope(v: np.ndarray) -> float:
    return np.polyfit(np.arange(1, len(v) + 1), v, 1)[0]


def _resi(v: np.ndarray) -> float:
    slope, intercept = np.polyfit(np.arange(1, len(v) + 1), v, 1)
    return v[-1] - (intercept + slope * len(v))


def _ema(x: np.ndarray, span: int) -> np.ndarray:
    """Weighted mean of every present value so far, weight (1 - alpha)^(bars ago); missing at a missing x."""
    alpha = 2 / (span + 1)
    out = np.full(len(x), np.nan)
    for t in range(span - 1, len(x)):
        if np.isnan(x[t]):
            continue
        ages = t - np.arange(t + 1)
        present = ~np.isnan(x[: t + 1])
        weights = (1 - alpha) ** ages[present]
        out[t] = (weights * x[: t + 1][present]).sum() / weights.sum()
    return out


def _wma(v: np.ndarray) -> float:
    weights = np.arange(1, len(v) + 1)
    return (weights * v).sum() / weights.sum()


C, O, V = "close", "open", "volume"  # noqa: E741 - the bar field initials
# name -> (expression, reference(columns of one symbol) -> values)
CASES = {
    "ref": ("Ref($close, 3)", lambda d: _shift(d[C], 3)),
    "delta": ("Delta($close, 2)", lambda d: d[C] - _shift(d[C], 2)),
    "mean": ("Mean($close, 5)", lambda d: _rolling(d[C], 5, np.mean)),
    "sum": ("Sum($volume, 4)", lambda d: _rolling(d[V], 4, np.sum)),
    "std": ("Std($close, 6)", lambda d: _rolling(d[C], 6, lambda v: np.std(v, ddof=1))),
    "var": ("Var($close, 6)", lambda d: _rolling(d[C], 6, lambda v: np.var(v, ddof=1))),
    "skew": ("Skew($close, 7)", lambda d: _rolling(d[C], 7, lambda v: stats.skew(v, bias=False))),
    "kurt": ("Kurt($close, 8)", lambda d: _rolling(d[C], 8, lambda v: stats.kurtosis(v, bias=False))),
    "max": ("Max($close, 5)", lambda d: _rolling(d[C], 5, np.max)),
    "min": ("Min($close, 5)", lambda d: _rolling(d[C], 5, np.min)),
    "med": ("Med($close, 6)", lambda d: _rolling(d[C], 6, np.median)),
    "quantile": ("Quantile($close, 7, 0.3)", lambda d: _rolling(d[C], 7, lambda v: np.quantile(v, 0.3))),
    "rank": ("Rank($volume, 5)", lambda d: _rolling(d[V], 5, lambda v: stats.rankdata(v)[-1] / len(v))),
    "idxmax": ("IdxMax($volume, 5)", lambda d: _rolling(d[V], 5, lambda v: np.argmax(v) + 1.0)),
    "idxmin": ("IdxMin($volume, 5)", lambda d: _rolling(d[V], 5, lambda v: np.argmin(v) + 1.0)),
    "slope": ("Slope($close, 6)", lambda d: _rolling(d[C], 6, _slope)),
    "rsquare": (
        "Rsquare($close, 6)",
        lambda d: _rolling(d[C], 6, lambda v: np.corrcoef(np.arange(len(v)), v)[0, 1] ** 2),
    ),
    "resi": ("Resi($close, 6)", lambda d: _rolling(d[C], 6, _resi)),
    "ema": ("EMA($close, 5)", lambda d: _ema(d[C], 5)),
    "wma": ("WMA($close, 5)", lambda d: _rolling(d[C], 5, _wma)),
    "corr": ("Corr($close, $open, 6)", lambda d: _pair(d[C], d[O], 6, lambda a, b: np.corrcoef(a, b)[0, 1])),
    "cov": ("Cov($close, $open, 6)", lambda d: _pair(d[C], d[O], 6, lambda a, b: np.cov(a, b, ddof=1)[0, 1])),
    "abs": ("Abs($close - $open)", lambda d: np.abs(d[C] - d[O])),
    "log": ("Log($volume)", lambda d: np.log(d[V])),
    "sign": ("Sign($close - $open)", lambda d: np.sign(d[C] - d[O])),
    "power": ("Power($close, 0.5)", lambda d: d[C] ** 0.5),
    "greater": ("Greater($close, $open)", lambda d: np.maximum(d[C], d[O])),
    "less": ("Less($close, $open)", lambda d: np.minimum(d[C], d[O])),
    "if": (  # a missing condition (close missing) is missing, not false
        "If($close > $open, $close, -$open)",
        lambda d: np.where(np.isnan(d[C]), np.nan, np.where(d[C] > d[O], d[C], -d[O])),
    ),
    "arith": ("($close - $open) / $open * 100 + -1", lambda d: (d[C] - d[O]) / d[O] * 100 - 1),
    "cmp": ("($close >= $open) + ($close == $close) - ($open != $close)", lambda d: _cmp(d)),
    "nested": ("Mean(Log($volume + 1), 4) / Std(Delta($close, 1), 5)", lambda d: _nested(d)),
    "mom5": ("$close / Ref($close, 5) - 1", lambda d: d[C] / _shift(d[C], 5) - 1),
    "constants": (  # a window over a constant is a full column of it; constants broadcast elsewhere
        "Sum(1, 3) + 0 * $close + If(1, 2, 3) - Greater(1, 0.5)",
        lambda d: _rolling(np.ones(len(d[C])), 3, np.sum) + 0 * d[C] + 2 - 1,
    ),
}


def _cmp(d: dict[str, np.ndarray]) -> np.ndarray:
    c, o = d[C], d[O]
    missing = np.isnan(c) | np.isnan(o)
    value = (c >= o).astype(float) + (c == c).astype(float) - (o != c).astype(float)
    return np.where(missing, np.nan, value)


def _nested(d: dict[str, np.ndarray]) -> np.ndarray:
    mean = _rolling(np.log(d[V] + 1), 4, np.mean)
    std = _rolling(d[C] - _shift(d[C], 1), 5, lambda v: np.std(v, ddof=1))
    return mean / std


@pytest.mark.parametrize("name", list(CASES))
def test_operator_matches_reference(panel: pl.DataFrame, name: str) -> None:
    text, reference = CASES[name]
    out = compute_features(panel, [expression_feature(name, text)])
    columns = {c: _per_symbol(panel, c) for c in (C, O, V)}
    with np.errstate(all="ignore"):
        expected = np.concatenate([reference({c: columns[c][i] for c in columns}) for i in range(2)])
    expected = np.where(np.isfinite(expected), expected, np.nan)  # the engine's output: non-finite → null
    got = out.get_column(name).fill_null(np.nan).to_numpy()
    assert np.isfinite(expected).sum() >= 10, "the reference must have values to compare"
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=text)


def test_repeated_terms_and_a_shared_panel_give_the_same_values(panel: pl.DataFrame) -> None:
    """Expressions computed together (one panel, shared inputs) equal each computed alone."""
    features = [expression_feature(n, CASES[n][0]) for n in CASES]
    together = compute_features(panel, features)
    for name in ("nested", "corr", "ema"):
        alone = compute_features(panel, [expression_feature(name, CASES[name][0])])
        assert together.get_column(name).equals(alone.get_column(name))
