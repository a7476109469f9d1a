"""Honest lookback (issue 12 §2-3): measured over EVERY registered feature, and the cross-symbol
inputs each feature declares."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quant_cli.data.synthetic import generate
from quant_cli.features.engine import compute_features
from quant_cli.features.registry import REGISTRY, feature_lookback
from quant_cli.pipeline import lookback
from quant_cli.pipeline.fitted import FittedPipeline

EVERYTHING = {"sets": ["all"], "windows": [5, 20], "timeframes": ["1w"], "cross_sectional": ["ret_5"]}
OPTIONS = {"benchmark": "S000", "max_staleness": None, "bar_spacing": "1d"}


def _pipeline(names: list[str]) -> FittedPipeline:
    windows = {n: feature_lookback(REGISTRY.feature(n)) for n in names}
    return FittedPipeline(features=names, preprocess={}, options=dict(OPTIONS), lookback=windows)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """4 symbols x 2000 daily bars (weekly Wilder RSI needs ~1,450), with a sector column."""
    bars = generate(symbols=4, bars=2000, seed=5)
    return bars.with_columns(sector=pl.when(pl.col("symbol") < "S002").then(pl.lit("a")).otherwise(pl.lit("b")))


@pytest.fixture(scope="module")
def measured(panel):
    names = REGISTRY.resolve(EVERYTHING).names
    return names, lookback.measure(_pipeline(names), panel)


def _last(bars: pl.DataFrame, names: list[str]) -> np.ndarray:
    table = compute_features(bars, names, _pipeline(names).feature_options())
    last = table.group_by("symbol", maintain_order=True).last().sort("symbol")
    return last.select(pl.col(names).fill_null(float("nan"))).to_numpy()


def test_every_registered_family_is_measured_and_converges(measured):
    names, result = measured
    families = {REGISTRY.feature(n).family.pattern for n in names}
    assert families == set(REGISTRY.families)  # nothing registered escapes the measurement
    assert result.unconverged == [] and set(result.bars) == set(names)
    assert result.required == max(result.bars.values()) < result.history


def test_values_from_the_declared_bars_agree_with_full_history(panel, measured):
    """For every feature: computed from only its measured lookback (and from the bundle's required
    bars), the value at each symbol's last bar equals the full-history value to 1e-9."""
    names, result = measured
    full_table = compute_features(panel, names, _pipeline(names).feature_options())
    scale = full_table.select(pl.col(names).abs().median().fill_null(0.0)).to_numpy()[0]
    full = _last(panel, names)
    by_bars: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        by_bars.setdefault(result.bars[name], []).append(i)
    by_bars.setdefault(result.required, list(range(len(names))))
    for n, index in by_bars.items():
        picked = [names[i] for i in index]
        values = _last(lookback.tail_bars(panel, n), picked)
        ok = lookback.agrees(values, full[:, index], scale[index]).all(axis=0)
        assert ok.all(), f"from {n} bars: {[p for p, good in zip(picked, ok) if not good]} differ from full history"


def test_recursive_features_need_more_than_their_window(panel, measured):
    """The definition's window is not enough for EMA / Wilder / MACD: the measurement is what makes
    the bundle honest (computed from the window alone, they differ from full history)."""
    _, result = measured
    for name in ("close_ema_20", "rsi_14", "atr_14", "adx_14", "macd_12_26", "mtf_rsi_1w"):
        window = feature_lookback(REGISTRY.feature(name))
        assert result.bars[name] > 3 * window, name
        values = _last(lookback.tail_bars(panel, window + 1), [name])
        assert not lookback.agrees(values, _last(panel, [name])).all(), name
    for name in ("ret_20", "MA20", "STD5"):  # rolling windows are exact once they see the window
        assert (
            feature_lookback(REGISTRY.feature(name))
            <= result.bars[name]
            <= feature_lookback(REGISTRY.feature(name)) + 1
        )


def test_features_declare_the_symbols_and_columns_a_request_needs():
    plain = _pipeline(["ret_5", "rsi_14", "VWAP0"])
    assert lookback.benchmark_symbol(plain) is None and lookback.cross_sectional(plain) == []
    assert lookback.input_columns(plain, ["open", "high", "low", "close", "volume"]) == ["high", "low", "close"]
    assert lookback.input_columns(plain, ["open", "high", "low", "close", "volume", "vwap"]) == ["close", "vwap"]
    crossing = _pipeline(["bench_beta_20", "cs_rank_ret_5", "sector_rel_ret_5"])
    assert lookback.benchmark_symbol(crossing) == "S000"
    assert lookback.cross_sectional(crossing) == ["cs_rank_ret_5", "sector_rel_ret_5"]
    assert lookback.extra_keys(crossing) == ["sector"]


def test_pipeline_keeps_the_measured_warmup_through_json(panel):
    pipeline = _pipeline(["ret_5", "close_ema_5"])
    assert pipeline.required_bars == 5  # unmeasured: the definitions' windows
    pipeline.measure_lookback(panel.filter(pl.col("symbol") == "S001"))
    assert pipeline.warmup["ret_5"] == 6 and pipeline.required_bars == pipeline.warmup["close_ema_5"] > 6
    assert FittedPipeline.from_json(pipeline.to_json()).warmup == pipeline.warmup


def test_tail_bars_keeps_all_of_a_symbol_shorter_than_n() -> None:
    """Symbols of different lengths (a 7-day reference beside weekday equities): asking for more bars
    than a symbol has keeps all of its bars (an unsigned len - n once wrapped around and kept none)."""
    bars = generate(symbols=2, bars=30, seed=1)
    ragged = bars.filter((pl.col("symbol") == "S000") | (pl.int_range(pl.len()).over("symbol") < 10))
    out = lookback.tail_bars(ragged, 20)
    assert out.group_by("symbol").len().sort("symbol")["len"].to_list() == [20, 10]
