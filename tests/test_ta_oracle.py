"""Every indicator of the "ta" set against an oracle: the TA-Lib Python package (`ta-lib`, import
`talib`, a dev dependency), or an independent numpy implementation where TA-Lib has no such
indicator (Parkinson / Garman-Klass volatility, skew, kurtosis, FFT band energy, regime).

Values must agree to 1e-8 relative wherever both define them, and the first non-null bar must be
TA-Lib's (same lookback). Known, deliberate differences are handled and stated per test:
- scale-free outputs: ATR, MACD, EMA/SMA are divided by (or related to) the close here;
- vol_w uses the sample std (ddof=1), TA-Lib's STDDEV the population std: a sqrt(w/(w-1)) factor;
- TA-Lib's MACD starts its fast EMA later (aligned with the slow one), so early values differ and
  converge exponentially; the line is also checked exactly against EMA(12) - EMA(26);
- flat windows (0/0): TA-Lib writes 0, qfactory null — synthetic bars never have them.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from quant_cli.data.synthetic import generate
from quant_cli.features import compute_features

talib = pytest.importorskip("talib", reason="TA-Lib is a dev dependency: pip install -e '.[dev]'")

RTOL = 1e-8


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Two symbols x 400 daily bars (the second symbol checks nothing leaks between symbols)."""
    return generate(symbols=2, bars=400, seed=11)


@pytest.fixture(scope="module")
def ohlcv(bars: pl.DataFrame) -> dict[str, np.ndarray]:
    one = bars.filter(pl.col("symbol") == "S001")
    return {c: one[c].to_numpy().astype(float) for c in ("open", "high", "low", "close", "volume")}


def ours(bars: pl.DataFrame, name: str) -> np.ndarray:
    out = compute_features(bars, [name]).filter(pl.col("symbol") == "S001")
    return out[name].to_numpy().astype(float)


def assert_same(got: np.ndarray, want: np.ndarray, rtol: float = RTOL, from_bar: int = 0) -> None:
    """Same warm-up (null exactly where the oracle has NaN) and values within rtol."""
    np.testing.assert_array_equal(
        np.isnan(got), np.isnan(want), err_msg="warm-up (null pattern) differs from the oracle"
    )
    keep = ~np.isnan(want)
    keep[:from_bar] = False
    np.testing.assert_allclose(got[keep], want[keep], rtol=rtol, atol=0)


@pytest.mark.parametrize(
    ("name", "oracle"),
    [
        ("rsi_14", lambda d: talib.RSI(d["close"], 14)),
        ("atr_14", lambda d: talib.ATR(d["high"], d["low"], d["close"], 14) / d["close"]),
        ("adx_14", lambda d: talib.ADX(d["high"], d["low"], d["close"], 14)),
        ("willr_14", lambda d: talib.WILLR(d["high"], d["low"], d["close"], 14)),
        ("cci_20", lambda d: talib.CCI(d["high"], d["low"], d["close"], 20)),
        ("mfi_14", lambda d: talib.MFI(d["high"], d["low"], d["close"], d["volume"], 14)),
        ("close_ema_20", lambda d: d["close"] / talib.EMA(d["close"], 20) - 1),
        ("close_ma_20", lambda d: d["close"] / talib.SMA(d["close"], 20) - 1),
        ("logret_1", lambda d: talib.LN(talib.ROCR(d["close"], 1))),
    ],
)
def test_matches_talib(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray], name: str, oracle) -> None:  # noqa: ANN001
    assert_same(ours(bars, name), oracle(ohlcv))


def test_stochastic_matches_talib_slow_stoch(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    slow_k, slow_d = talib.STOCH(
        ohlcv["high"],
        ohlcv["low"],
        ohlcv["close"],
        fastk_period=14,
        slowk_period=3,
        slowk_matype=0,
        slowd_period=3,
        slowd_matype=0,
    )
    k = ours(bars, "stoch_k_14")
    # TA-Lib withholds %K until %D exists (bar 17); ours starts at %K's own lookback, bar 15.
    assert np.isnan(k[:15]).all() and not np.isnan(k[15:]).any()
    assert_same(np.where(np.isnan(slow_k), np.nan, k), slow_k)
    assert_same(ours(bars, "stoch_d_14"), slow_d)


def test_bollinger_matches_talib_bbands(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    upper, middle, lower = talib.BBANDS(ohlcv["close"], 20, 2.0, 2.0, 0)
    assert_same(ours(bars, "bb_pctb_20"), (ohlcv["close"] - lower) / (upper - lower))
    assert_same(ours(bars, "bb_width_20"), (upper - lower) / middle)


def test_macd_matches_talib(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    c = ohlcv["close"]
    line = talib.EMA(c, 12) - talib.EMA(c, 26)  # exactly our definition: both EMAs seeded at their own start
    assert_same(ours(bars, "macd_12_26"), line / c)
    signal = talib.EMA(line, 9)  # TA-Lib skips the leading NaNs, as our seeded EMA does
    assert_same(ours(bars, "macd_signal_12_26_9"), signal / c)
    # talib.MACD seeds the fast EMA 14 bars later; the difference decays like (11/13)^t.
    _, _, hist = talib.MACD(c, 12, 26, 9)
    got = ours(bars, "macd_hist_12_26_9")
    np.testing.assert_allclose(got[200:], hist[200:] / c[200:], rtol=RTOL)


def test_vol_is_talib_stddev_of_log_returns_with_sample_correction(
    bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]
) -> None:
    r = talib.LN(talib.ROCR(ohlcv["close"], 1))
    assert_same(ours(bars, "vol_20"), talib.STDDEV(r, 20, 1.0) * math.sqrt(20 / 19))


def test_obv_net_is_talib_obv_change_over_total_volume(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    obv = talib.OBV(ohlcv["close"], ohlcv["volume"])
    change = obv - np.r_[np.full(20, np.nan), obv[:-20]]
    assert_same(ours(bars, "obv_net_20"), change / talib.SUM(ohlcv["volume"], 20))


# --- indicators TA-Lib does not have: independent numpy references ------------------------------


def _rolling(x: np.ndarray, w: int, fn) -> np.ndarray:  # noqa: ANN001
    out = np.full(len(x), np.nan)
    views = sliding_window_view(x, w)
    out[w - 1 :] = [np.nan if np.isnan(v).any() else fn(v) for v in views]
    return out


def _log_returns(c: np.ndarray) -> np.ndarray:
    return np.r_[np.nan, np.diff(np.log(c))]


def test_parkinson_and_garman_klass(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    hl = np.log(ohlcv["high"] / ohlcv["low"])
    co = np.log(ohlcv["close"] / ohlcv["open"])
    assert_same(ours(bars, "park_vol_20"), np.sqrt(_rolling(hl**2, 20, np.mean) / (4 * np.log(2))))
    gk = 0.5 * hl**2 - (2 * np.log(2) - 1) * co**2
    assert_same(ours(bars, "gk_vol_20"), np.sqrt(_rolling(gk, 20, np.mean)))


def _sample_skew(v: np.ndarray) -> float:
    n, d = len(v), v - v.mean()
    m2, m3 = (d**2).mean(), (d**3).mean()
    return math.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5


def _sample_excess_kurtosis(v: np.ndarray) -> float:
    n, d = len(v), v - v.mean()
    m2, m4 = (d**2).mean(), (d**4).mean()
    return (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * m4 / m2**2 - 3 * (n - 1))


def test_skew_and_kurtosis_are_the_bias_corrected_sample_moments(
    bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]
) -> None:
    r = _log_returns(ohlcv["close"])
    assert_same(ours(bars, "skew_20"), _rolling(r, 20, _sample_skew), rtol=1e-7)  # rolling moment sums: ~1e-9 noise
    assert_same(ours(bars, "kurt_20"), _rolling(r, 20, _sample_excess_kurtosis), rtol=1e-7)


def _band_share(v: np.ndarray, bins: range) -> float:
    power = np.abs(np.fft.fft(v)) ** 2
    return power[[k for k in range(1, len(v)) if min(k, len(v) - k) in bins]].sum() / power[1:].sum()


def test_fft_band_energy_matches_numpy_fft(bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    r = _log_returns(ohlcv["close"])
    assert_same(ours(bars, "fft_low_32"), _rolling(r, 32, lambda v: _band_share(v, range(1, 5))))
    assert_same(ours(bars, "fft_high_32"), _rolling(r, 32, lambda v: _band_share(v, range(9, 17))))
    low, high = ours(bars, "fft_low_32"), ours(bars, "fft_high_32")
    assert np.nanmin(low) >= 0 and np.nanmax(low + high) <= 1 + 1e-12


def test_regime_probability_is_the_logistic_of_the_trend_t_stat(
    bars: pl.DataFrame, ohlcv: dict[str, np.ndarray]
) -> None:
    r = _log_returns(ohlcv["close"])
    t_stat = _rolling(r, 20, lambda v: v.mean() / v.std(ddof=1) * math.sqrt(20))
    got = ours(bars, "regime_bull_20")
    assert_same(got, 1 / (1 + np.exp(-t_stat)))
    assert np.nanmin(got) > 0 and np.nanmax(got) < 1
