"""Feature registry selection, the engine's output contract, and values against reference math."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quant_cli.data.synthetic import generate
from quant_cli.errors import RecipeError
from quant_cli.features import REGISTRY, compute_features
from quant_cli.features.registry import Registry
from quant_cli.report import CollectingReporter

CORE_DEFAULT = [
    "ret_5",
    "ret_10",
    "ret_20",
    "ret_60",
    "logret_1",
    "vol_5",
    "vol_10",
    "vol_20",
    "vol_60",
    "rsi_14",
    "macd_12_26",
    "macd_signal_12_26_9",
    "macd_hist_12_26_9",
    "bb_pctb_20",
    "atr_14",
    "volume_z_20",
    "close_ma_5",
    "close_ma_10",
    "close_ma_20",
    "close_ma_60",
    "hl_range",
]


def section(**kw: object) -> dict[str, object]:
    return {"sets": ["core"], "include": [], "exclude": [], "windows": [5, 10, 20, 60], **kw}


def names(**kw: object) -> list[str]:
    return REGISTRY.resolve(section(**kw)).names


# --- selection -------------------------------------------------------------------------------


def test_core_set_resolves_in_canonical_order() -> None:
    assert names() == CORE_DEFAULT
    assert names(windows=[60, 20, 5, 10, 5]) == CORE_DEFAULT  # order/duplicates of windows do not matter


def test_windows_shape_windowed_families_only() -> None:
    got = names(windows=[3])
    assert [n for n in got if n.startswith(("ret_", "vol_", "close_ma_"))] == ["ret_3", "vol_3", "close_ma_3"]
    assert "rsi_14" in got and "atr_14" in got


def test_include_by_concrete_name_pattern_and_tag() -> None:
    assert names(sets=[], include=["ret_3", "rsi_14"]) == ["ret_3", "rsi_14"]
    assert names(sets=[], include=["ret_{w}"], windows=[2, 7]) == ["ret_2", "ret_7"]
    for tag, first in (("volume", "volume_z_20"), ("candle", "hl_range")):  # a tag spans families of every set
        got = names(sets=[], include=[tag])
        assert got[0] == first and all(tag in REGISTRY.feature(n).family.tags for n in got)


def test_exclude_by_name_tag_and_pattern() -> None:
    assert "ret_5" not in names(exclude=["ret_5"]) and "ret_10" in names(exclude=["ret_5"])
    kept = names(exclude=["volatility"])
    assert not [n for n in kept if n.startswith(("vol_", "atr_", "bb_", "hl_"))]
    assert not [n for n in names(exclude=["close_ma_{w}"]) if n.startswith("close_ma_")]
    assert "ret_3" not in names(include=["ret_3"], exclude=["momentum"])  # exclude wins over include


def test_all_set_selects_every_family() -> None:
    got = REGISTRY.resolve(section(sets=["all"], windows=[5], timeframes=["1w"], cross_sectional=["ret_5"])).features
    assert {f.family.pattern for f in got} == set(REGISTRY.families)


def test_window_below_family_minimum_is_reported_not_computed() -> None:
    selection = REGISTRY.resolve(section(windows=[1, 5]))
    assert "vol_1" not in selection.names and selection.too_short == ["vol_1"]
    assert "ret_1" in selection.names


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"include": ["rsi_41"]}, "features.include: unknown feature or tag 'rsi_41' (did you mean 'rsi_14'?)"),
        (
            {"exclude": ["volatlity"]},
            "features.exclude: unknown feature or tag 'volatlity' (did you mean 'volatility'?)",
        ),
        ({"sets": ["cor"]}, "features.sets: unknown feature set 'cor' (did you mean 'core'?)"),
        ({"windows": [0, 5]}, "features.windows: windows are bar counts >= 1, got [0]"),
    ],
)
def test_unknown_names_are_recipe_errors_naming_the_key(kw: dict[str, object], expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        REGISTRY.resolve(section(**kw))
    assert str(info.value).startswith(expected)


def test_registry_rejects_duplicates_and_clashes() -> None:
    reg = Registry()
    reg.define_set("s", "test set")
    reg.register("x_{w}", inputs=("close",), tags=("t",), sets=("s",), description="d")(lambda w: pl.col("close"))
    with pytest.raises(ValueError, match="clashes"):
        reg.register("x_{w}", inputs=("close",), tags=("t",), description="d")(lambda w: pl.col("close"))
    with pytest.raises(ValueError, match="clashes"):  # x_{w} would also answer to the name x_14
        reg.register("x_{n}", params={"n": 14}, inputs=("close",), tags=("t",), description="d")(
            lambda n: pl.col("close")
        )
    with pytest.raises(ValueError, match="define sets"):
        reg.register("y", inputs=("close",), tags=("t",), sets=("nope",), description="d")(lambda: pl.col("close"))


def test_catalogue_describes_every_family() -> None:
    rows = REGISTRY.catalogue()
    assert [r["name"] for r in rows] == list(REGISTRY.families)
    atr = next(r for r in rows if r["name"] == "atr_14")
    assert atr["inputs"] == ["high", "low", "close"] and "volatility" in atr["tags"] and atr["description"]


# --- engine contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> pl.DataFrame:
    return generate(symbols=2, bars=90, seed=3)


def test_output_contract(tiny: pl.DataFrame) -> None:
    features = REGISTRY.resolve(section()).features
    out = compute_features(tiny.sample(fraction=1.0, shuffle=True, seed=1), features)  # input order must not matter
    assert out.columns == ["symbol", "ts", *CORE_DEFAULT]
    assert out.height == tiny.height
    assert out.select("symbol", "ts").equals(tiny.select("symbol", "ts"))
    assert all(out.schema[n] == pl.Float64 for n in CORE_DEFAULT)


def test_windows_do_not_cross_symbols(tiny: pl.DataFrame) -> None:
    out = compute_features(tiny, ["ret_5", "close_ma_5"])
    second = out.filter(pl.col("symbol") == "S001")
    assert second["ret_5"].head(5).null_count() == 5 and second["ret_5"][5] is not None
    assert second["close_ma_5"].head(4).null_count() == 4


def test_close_only_data_skips_with_one_notice(tiny: pl.DataFrame) -> None:
    reporter = CollectingReporter()
    out = compute_features(
        tiny.select("symbol", "ts", "close"), REGISTRY.resolve(section()).features, reporter=reporter
    )
    assert len(reporter.texts("notice")) == 1
    err = reporter.texts("notice")[0]
    assert (
        "skipped 3 feature(s)" in err
        and "atr_14, hl_range (need high, low)" in err
        and "volume_z_20 (need volume)" in err
    )
    assert "atr_14" not in out.columns and "ret_5" in out.columns


def test_non_finite_values_become_null() -> None:
    flat = pl.DataFrame(
        {
            "symbol": ["A"] * 30,
            "ts": pl.datetime_range(
                pl.datetime(2020, 1, 1), pl.datetime(2020, 1, 30), "1d", time_zone="UTC", eager=True
            ),
            "close": [10.0] * 30,
            "volume": [0.0] * 30,
        }
    )
    out = compute_features(flat, ["bb_pctb_20", "volume_z_20", "rsi_14", "ret_5"])
    for name in ("bb_pctb_20", "volume_z_20", "rsi_14"):  # 0/0 on a flat series
        assert out[name].null_count() == 30, name
    assert out["ret_5"].drop_nulls().to_list() == [0.0] * 25


def test_empty_bars_give_empty_table(tiny: pl.DataFrame) -> None:
    out = compute_features(tiny.head(0), ["ret_5", "atr_14"])
    assert out.columns == ["symbol", "ts", "ret_5", "atr_14"] and out.height == 0


# --- values against reference computations ---------------------------------------------------------


def _one(tiny: pl.DataFrame, name: str, symbol: str = "S001") -> tuple[pl.DataFrame, np.ndarray]:
    bars = tiny.filter(pl.col("symbol") == symbol)
    got = compute_features(tiny, [name]).filter(pl.col("symbol") == symbol)[name].to_numpy()
    return bars, got.astype(float)


def _assert_matches(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # nulls exactly where the reference has none
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-10, atol=1e-12)


def _rolling(x: np.ndarray, w: int, fn) -> np.ndarray:  # noqa: ANN001
    out = np.full(len(x), np.nan)
    for t in range(w - 1, len(x)):
        window = x[t - w + 1 : t + 1]
        out[t] = np.nan if np.isnan(window).any() else fn(window)
    return out


def _seeded_smooth(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Hand-written Wilder/EMA loop: seed with the mean of the first n valid values."""
    out = np.full(len(x), np.nan)
    first = int(np.argmax(~np.isnan(x)))
    out[first + n - 1] = x[first : first + n].mean()
    for t in range(first + n, len(x)):
        out[t] = (1 - alpha) * out[t - 1] + alpha * x[t]
    return out


def test_ret_and_logret(tiny: pl.DataFrame) -> None:
    bars, got = _one(tiny, "ret_5")
    c = bars["close"].to_numpy()
    _assert_matches(got, np.r_[np.full(5, np.nan), c[5:] / c[:-5] - 1])
    _, got = _one(tiny, "logret_1")
    _assert_matches(got, np.r_[np.nan, np.diff(np.log(c))])


def test_vol_is_sample_std_of_log_returns(tiny: pl.DataFrame) -> None:
    bars, got = _one(tiny, "vol_20")
    r = np.r_[np.nan, np.diff(np.log(bars["close"].to_numpy()))]
    _assert_matches(got, _rolling(r, 20, lambda v: np.std(v, ddof=1)))


def test_rsi_matches_wilder_loop(tiny: pl.DataFrame) -> None:
    bars, got = _one(tiny, "rsi_14")
    change = np.r_[np.nan, np.diff(bars["close"].to_numpy())]
    gain = _seeded_smooth(np.where(np.isnan(change), np.nan, np.maximum(change, 0)), 14, 1 / 14)
    loss = _seeded_smooth(np.where(np.isnan(change), np.nan, np.maximum(-change, 0)), 14, 1 / 14)
    want = 100 * gain / (gain + loss)
    assert np.isnan(got[:14]).all() and not np.isnan(got[14])  # TA-Lib's lookback: 14 bars
    _assert_matches(got, want)


def test_atr_matches_wilder_loop(tiny: pl.DataFrame) -> None:
    bars, got = _one(tiny, "atr_14")
    h, low, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    prev = np.r_[np.nan, c[:-1]]
    tr = np.maximum.reduce([h - low, np.abs(h - prev), np.abs(low - prev)])
    tr[0] = np.nan
    _assert_matches(got, _seeded_smooth(tr, 14, 1 / 14) / c)


def test_macd_matches_ema_loop(tiny: pl.DataFrame) -> None:
    bars, line = _one(tiny, "macd_12_26")
    _, hist = _one(tiny, "macd_hist_12_26_9")
    c = bars["close"].to_numpy()
    raw = _seeded_smooth(c, 12, 2 / 13) - _seeded_smooth(c, 26, 2 / 27)
    signal = _seeded_smooth(raw, 9, 2 / 10)
    _assert_matches(line, raw / c)
    _assert_matches(hist, (raw - signal) / c)
    assert np.isnan(hist[:33]).all() and not np.isnan(hist[33])


def test_bollinger_volume_z_and_ma_gap(tiny: pl.DataFrame) -> None:
    bars, pctb = _one(tiny, "bb_pctb_20")
    c, v = bars["close"].to_numpy(), bars["volume"].to_numpy()
    mid, sd = _rolling(c, 20, np.mean), _rolling(c, 20, np.std)
    _assert_matches(pctb, (c - (mid - 2 * sd)) / (4 * sd))
    _, vz = _one(tiny, "volume_z_20")
    lv = np.log1p(v)
    _assert_matches(vz, (lv - _rolling(lv, 20, np.mean)) / _rolling(lv, 20, lambda x: np.std(x, ddof=1)))
    _, gap = _one(tiny, "close_ma_10")
    _assert_matches(gap, c / _rolling(c, 10, np.mean) - 1)
    _, rng = _one(tiny, "hl_range")
    _assert_matches(rng, (bars["high"].to_numpy() - bars["low"].to_numpy()) / c)
