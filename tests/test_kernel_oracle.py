"""Every registered feature on the compiled kernels agrees with its old polars expression (the oracle,
tests/feature_oracle) to 1e-9 relative, with the same nulls, on a panel built to be awkward.

The panel: random walks with prices on a 0.05 grid (ties inside windows), a symbol with long flat
stretches and runs of zero volume (0/0, log(0), x/0), a 3-bar and a 1-bar symbol (short histories),
calendars that differ (missing days, a late listing, a halt), a vwap column with null and NaN runs,
a benchmark whose own calendar has gaps (benchmark_close is null where it is stale) and a sector.
"Relative" is lookback.agrees': to the larger of the value and the column's median magnitude, with
an absolute floor of 1e-12 (a cancellation leaves 1e-17 where the other side has 0.0).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from feature_oracle import oracle

from quant_cli.features import REGISTRY, FeatureOptions, compute_features, kernels
from quant_cli.features.panel import PARALLEL_MIN_ROWS, kernel_columns
from quant_cli.pipeline.lookback import agrees

SECTION = {
    "sets": ["all"],
    "windows": [2, 3, 5, 10, 20, 60],
    "alpha158_windows": [2, 5, 10, 20, 30, 60],
    "timeframes": ["1w", "3d"],
    "cross_sectional": ["ret_5", "RSV20", "VMA5"],
}
FEATURES = REGISTRY.resolve(SECTION).features
# sqrt(rolling mean): compared squared. On a flat window polars' running mean of zeros leaves
# ~1e-20 (its sqrt 1e-10) where the kernels give 0.0; the square root itself is exact.
SQUARED = ("park_vol_", "gk_vol_")
OPTIONS = FeatureOptions(benchmark="B", max_staleness="3d")


def _walk(rng: np.random.Generator, n: int, flat: slice | None = None) -> dict[str, np.ndarray]:
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.015, n))) / 0.05) * 0.05
    if flat is not None:
        close[flat] = close[flat.start]
    open_ = np.round(np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.003, n)) / 0.05) * 0.05
    spread = np.round(np.abs(rng.normal(0, 0.4, n)) / 0.05) * 0.05
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - np.round(np.abs(rng.normal(0, 0.4, n)) / 0.05) * 0.05
    volume = np.round(rng.lognormal(10, 1, n), -2)
    if flat is not None:  # a halted stretch: no range, and runs of zero volume
        high[flat] = low[flat] = open_[flat] = close[flat]
        volume[flat.start : flat.start + 12] = 0.0
        volume[flat.stop - 5 : flat.stop] = 0.0
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _symbol(rng: np.random.Generator, name: str, days: np.ndarray, flat: slice | None = None) -> pl.DataFrame:
    cols = _walk(rng, len(days), flat)
    vwap = (cols["high"] + cols["low"] + cols["close"]) / 3.0
    frame = pl.DataFrame({"symbol": name, "ts": days, **cols, "vwap": vwap})
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    days = np.arange(np.datetime64("2021-01-01"), np.datetime64("2021-01-01") + 420).astype("datetime64[us]")
    weekdays = days[(days.astype("datetime64[D]").view("int64") - 4) % 7 < 5]  # equity calendar
    gappy = np.sort(rng.choice(weekdays, size=len(weekdays) - 40, replace=False))
    frames = [
        _symbol(rng, "A", weekdays),
        _symbol(rng, "C", gappy),  # misses 40 random days
        _symbol(rng, "D", weekdays[90:]),  # listed late
        _symbol(rng, "E", weekdays, flat=slice(100, 170)),  # halted: flat prices, zero volumes
        _symbol(rng, "H", weekdays[:150], flat=slice(0, 40)),  # starts flat: ADX's 0/0 DX
        _symbol(rng, "F", weekdays[-3:]),  # three bars
        _symbol(rng, "G", weekdays[-1:]),  # one bar
        _symbol(
            rng, "B", np.sort(rng.choice(days, size=len(days) - 60, replace=False))
        ),  # the benchmark: 7-day week, gaps
    ]
    bars = pl.concat(frames).sort("symbol", "ts")
    row = pl.int_range(pl.len()).over("symbol")
    vwap = (
        pl.when((row % 97 >= 20) & (row % 97 < 26))
        .then(None)  # null runs
        .when((row % 89 >= 40) & (row % 89 < 43))
        .then(float("nan"))  # NaN runs
        .otherwise(pl.col("vwap"))
    )
    sector = pl.when(pl.col("symbol").is_in(["A", "C", "E"])).then(pl.lit("x")).otherwise(pl.lit("y"))
    return bars.with_columns(vwap=vwap, sector=sector)


@pytest.fixture(scope="module")
def both(panel: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    kernel = compute_features(panel, FEATURES, OPTIONS)
    reference = compute_features(panel, [oracle(f) for f in FEATURES], OPTIONS)
    return kernel, reference


def test_every_family_is_compared() -> None:
    assert {f.family.pattern for f in FEATURES} == set(REGISTRY.families)


def _flat_typical_price(panel: pl.DataFrame, n: int) -> np.ndarray:
    """Rows whose last n typical prices are all equal (ties included exactly)."""
    tp = (pl.col("high") + pl.col("low") + pl.col("close")) / 3.0
    flat = (tp.rolling_max(n, min_samples=n) == tp.rolling_min(n, min_samples=n)).over("symbol")
    return panel.sort("symbol", "ts").select(flat.fill_null(False)).to_series().to_numpy()


@pytest.mark.parametrize("name", [f.name for f in FEATURES])
def test_kernel_matches_oracle(name: str, panel: pl.DataFrame, both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    kernel, reference = both
    if name == "cci_20":  # flat window: the oracle's (tp - SMA) / MAD is rounding noise / rounding noise (e.g.
        flat = _flat_typical_price(panel, 20)  # -66.7) where exact arithmetic has 0/0; the kernels give null,
        assert kernel.filter(pl.Series(flat)).get_column(name).null_count() == flat.sum() > 0  # as ta.py says
        kernel, reference = kernel.filter(pl.Series(~flat)), reference.filter(pl.Series(~flat))
    assert kernel.select("symbol", "ts").equals(reference.select("symbol", "ts"))
    mine = kernel.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy()
    theirs = reference.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if name.startswith(SQUARED):
        mine, theirs = mine**2, theirs**2
    scale = float(np.nanmedian(np.abs(theirs))) if np.isfinite(theirs).any() else 0.0
    ok = agrees(mine, theirs, scale)
    if not ok.all():
        bad = kernel.select("symbol", "ts").with_columns(kernel=mine, oracle=theirs).filter(pl.Series(~ok))
        pytest.fail(f"{name}: {(~ok).sum()} of {len(ok)} values differ, first:\n{bad.head(5)}")


def test_the_panel_is_awkward(panel: pl.DataFrame, both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """The comparison proves something only if the awkward cases are there."""
    assert panel.get_column("vwap").null_count() > 0 and panel.get_column("vwap").is_nan().sum() > 0
    assert panel.filter(pl.col("volume") == 0).height >= 10
    assert panel.group_by("symbol").len().get_column("len").min() == 1
    kernel, reference = both
    adx = reference.filter(pl.col("symbol") == "H").get_column("adx_14")
    assert adx.is_nan().any() or adx.null_count() == adx.len()  # the poisoned recursion was exercised
    assert kernel.get_column("bench_corr_20").null_count() > kernel.filter(pl.col("symbol") == "A").height // 10


# --- the kernels one by one, on missing values, where the polars operator takes them -------------


def _series_with_gaps() -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    rng = np.random.default_rng(1)
    x = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400))), 1)
    x[100:130] = x[100]  # flat
    x[200] = x[260:263] = np.nan  # missing
    y = np.log(rng.uniform(1, 1000, 400))
    y[300] = np.nan
    offsets = np.array([0, 1, 3, 250, 400], dtype=np.int64)
    symbols = np.repeat(np.arange(4), np.diff(offsets))
    frame = pl.DataFrame({"s": symbols, "x": x, "y": y}).with_columns(pl.col("x", "y").fill_nan(None))
    return x, y, frame


_X, _Y = pl.col("x"), pl.col("y")
_CASES = {
    "sum": (lambda x, y, o, w: kernels.rolling_sum(x, o, w), lambda w: _X.rolling_sum(w, min_samples=w)),
    "mean": (lambda x, y, o, w: kernels.rolling_mean(x, o, w), lambda w: _X.rolling_mean(w, min_samples=w)),
    "std": (lambda x, y, o, w: kernels.rolling_std(x, o, w), lambda w: _X.rolling_std(w, min_samples=w)),
    "std0": (lambda x, y, o, w: kernels.rolling_std(x, o, w, 0), lambda w: _X.rolling_std(w, min_samples=w, ddof=0)),
    "var": (lambda x, y, o, w: kernels.rolling_var(x, o, w), lambda w: _X.rolling_var(w, min_samples=w)),
    "max": (lambda x, y, o, w: kernels.rolling_max(x, o, w), lambda w: _X.rolling_max(w, min_samples=w)),
    "min": (lambda x, y, o, w: kernels.rolling_min(x, o, w), lambda w: _X.rolling_min(w, min_samples=w)),
    "quantile": (
        lambda x, y, o, w: kernels.rolling_quantile(x, o, w, 0.8),
        lambda w: _X.rolling_quantile(0.8, "linear", window_size=w, min_samples=w),
    ),
    "rank": (lambda x, y, o, w: kernels.rolling_rank(x, o, w), lambda w: _X.rolling_rank(w, "average", min_samples=w)),
    "skew": (lambda x, y, o, w: kernels.rolling_skew(x, o, w), lambda w: _X.rolling_skew(w, bias=False, min_samples=w)),
    "kurt": (
        lambda x, y, o, w: kernels.rolling_kurt(x, o, w),
        lambda w: _X.rolling_kurtosis(w, fisher=True, bias=False, min_samples=w),
    ),
    "corr": (
        lambda x, y, o, w: kernels.rolling_corr(x, y, o, w),
        lambda w: pl.rolling_corr(_X, _Y, window_size=w, min_samples=w),
    ),
    "cov": (
        lambda x, y, o, w: kernels.rolling_cov(x, y, o, w),
        lambda w: pl.rolling_cov(_X, _Y, window_size=w, min_samples=w),
    ),
    "shift": (lambda x, y, o, w: kernels.shift(x, o, w), lambda w: _X.shift(w)),
    "ewm": (
        lambda x, y, o, w: kernels.ema_mean_seeded(x, o, w, 2 / (w + 1)),
        lambda w: (
            pl.when(pl.int_range(pl.len()) == w - 1)
            .then(_X.rolling_mean(w, min_samples=w))
            .when(pl.int_range(pl.len()) >= w)
            .then(_X)
            .ewm_mean(alpha=2 / (w + 1), adjust=False, ignore_nulls=True)
        ),
    ),
    "ewm_adjusted": (  # Qlib's EMA (expressions): weights by bar distance, missing rows missing
        lambda x, y, o, w: kernels.ewm_adjusted(x, o, 2 / (w + 1), w),
        lambda w: pl.when(pl.int_range(pl.len()) >= w - 1).then(
            _X.ewm_mean(alpha=2 / (w + 1), adjust=True, ignore_nulls=False, min_samples=1)
        ),
    ),
}


@pytest.mark.parametrize("w", [1, 2, 5, 20])
@pytest.mark.parametrize("op", list(_CASES))
def test_kernel_matches_polars_operator_with_missing_values(op: str, w: int) -> None:
    x, y, frame = _series_with_gaps()
    offsets = np.array([0, 1, 3, 250, 400], dtype=np.int64)
    mine_fn, expr = _CASES[op]
    w = max(w, 4) if op in ("skew", "kurt") else w  # defined from 3 / 4 values on
    mine = mine_fn(x, y, offsets, w)
    theirs = frame.select(expr(w).over("s")).to_series().cast(pl.Float64).fill_null(float("nan")).to_numpy()
    theirs = np.where(np.isfinite(theirs), theirs, np.nan)
    mine = np.where(np.isfinite(mine), mine, np.nan)
    assert agrees(mine, theirs, float(np.nanmedian(np.abs(theirs))) if np.isfinite(theirs).any() else 0.0).all()


def test_weighted_sum_matches_polars() -> None:
    """polars cannot weight a window holding a null (it panics), so this one runs on gap-free data."""
    x, _, _ = _series_with_gaps()
    x = np.nan_to_num(x, nan=50.0)
    offsets = np.array([0, 1, 3, 250, 400], dtype=np.int64)
    weights = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    frame = pl.DataFrame({"s": np.repeat(np.arange(4), np.diff(offsets)), "x": x})
    theirs = frame.select(_X.rolling_sum(5, weights=list(weights), min_samples=5).over("s")).to_series().to_numpy()
    mine = kernels.rolling_weighted_sum(x, offsets, weights)
    assert agrees(np.where(np.isfinite(mine), mine, np.nan), theirs.astype(float), 1.0).all()


def test_a_panel_cut_into_threads_gives_the_values_of_one_pass(panel: pl.DataFrame) -> None:
    """Big panels run groups of symbols on threads; the values are those of one serial pass, bit for bit."""
    big = pl.concat([panel.with_columns(pl.col("symbol") + f"_{i}") for i in range(40)]).sort("symbol", "ts")
    assert big.height >= PARALLEL_MIN_ROWS
    stage1 = [f for f in FEATURES if f.family.kernel and not f.family.timeframed and "benchmark_close" not in f.inputs]
    frame = big.with_columns(pl.col("open", "high", "low", "close", "volume").cast(pl.Float64))
    threaded = kernel_columns(frame, stage1, workers=3)
    serial = kernel_columns(frame, stage1, workers=1)
    assert threaded.equals(serial)
    one_symbol = frame.filter(pl.col("symbol") == "A_7")
    rows = frame.with_row_index().filter(pl.col("symbol") == "A_7").get_column("index")
    assert kernel_columns(one_symbol, stage1).equals(threaded[rows])  # a served window: the same values


def test_dates_are_what_the_calendars_say(panel: pl.DataFrame) -> None:
    weekend = panel.filter(pl.col("ts").dt.weekday() >= 6)
    assert set(weekend.get_column("symbol").unique()) == {"B"}
    assert panel.get_column("ts").min() >= dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
