"""A synthetic multi-asset panel that looks like markets and hides a weak, learnable signal.

Each symbol's log return is
    r[i,t] = beta_i * market[t] + gamma_i * sector[s(i), t] + drift[i,t-1] + sigma_i * regime_vol[t] * eps[i,t]
where the market has two volatility regimes (a Markov chain), sectors add correlated blocks, and
`drift` is a slow AR(1) process with persistence 0.98: it is the planted predictable component.
Past returns carry information about it, so momentum-like features predict the next returns a
little (information coefficient of a few percent) — enough for a model to demonstrably learn.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_cli.data.frequency import parse_frequency

_DRIFT_PERSISTENCE = 0.98
_CALM_VOL, _STRESSED_VOL = 0.008, 0.02
_STAY_CALM, _STAY_STRESSED = 0.99, 0.95


def generate(
    symbols: int = 20,
    bars: int = 1500,
    frequency: str = "1d",
    start: str = "2015-01-02",
    seed: int = 42,
    signal: float = 0.2,
    sector: bool = False,
) -> pl.DataFrame:
    """Canonical bars (symbol, ts, open, high, low, close, volume), sorted by (symbol, ts); with `sector`
    also a text column `sector` naming each symbol's sector block ('sector_0', ...) — the same draws either
    way, so the prices do not change."""
    rng = np.random.default_rng(seed)
    ts = _timestamps(bars, frequency, start)
    scale = np.sqrt(parse_frequency(frequency) / dt.timedelta(days=1))  # returns shrink with bar size
    regime_vol = _regime_vol(rng, bars) * scale
    log_ret, sector_of = _log_returns(rng, symbols, bars, regime_vol, signal * _CALM_VOL * scale)
    frames = [_ohlcv(rng, f"S{i:03d}", ts, log_ret[i], regime_vol) for i in range(symbols)]
    if sector:
        frames = [f.with_columns(pl.lit(f"sector_{sector_of[i]}").alias("sector")) for i, f in enumerate(frames)]
    return pl.concat(frames).sort("symbol", "ts")


def _timestamps(bars: int, frequency: str, start: str) -> np.ndarray:
    first = np.datetime64(start, "us")
    if frequency == "1d":  # business days, like an equity calendar
        days = np.busday_offset(np.datetime64(start, "D"), np.arange(bars), roll="forward")
        return days.astype("datetime64[us]")
    step = np.timedelta64(int(parse_frequency(frequency).total_seconds() * 1e6), "us")
    return first + step * np.arange(bars)


def _regime_vol(rng: np.random.Generator, bars: int) -> np.ndarray:
    stressed = np.zeros(bars, dtype=bool)
    for t in range(1, bars):  # a two-state Markov chain; one scalar step per bar is cheap
        stay = _STAY_STRESSED if stressed[t - 1] else _STAY_CALM
        stressed[t] = stressed[t - 1] if rng.random() < stay else not stressed[t - 1]
    return np.where(stressed, _STRESSED_VOL, _CALM_VOL)


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, stationary_std: float) -> np.ndarray:
    innovations = rng.normal(0.0, stationary_std * np.sqrt(1 - phi**2), size=shape)
    out = np.empty(shape)
    out[:, 0] = rng.normal(0.0, stationary_std, size=shape[0])
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + innovations[:, t]
    return out


def _log_returns(
    rng: np.random.Generator, n: int, bars: int, regime_vol: np.ndarray, drift_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n, bars) log returns, and each symbol's sector block (n,)."""
    n_sectors = max(1, min(5, n // 4))
    sector_of = rng.integers(0, n_sectors, size=n)
    market = rng.normal(0.0, 1.0, size=bars) * regime_vol * 0.8
    sectors = rng.normal(0.0, 1.0, size=(n_sectors, bars)) * regime_vol * 0.5
    beta = rng.uniform(0.6, 1.4, size=(n, 1))
    gamma = rng.uniform(0.3, 1.0, size=(n, 1))
    sigma = rng.uniform(0.7, 1.5, size=(n, 1))
    drift = _ar1(rng, (n, bars), _DRIFT_PERSISTENCE, drift_std)
    lagged_drift = np.concatenate([np.zeros((n, 1)), drift[:, :-1]], axis=1)  # known only after t-1
    noise = rng.normal(0.0, 1.0, size=(n, bars)) * sigma * regime_vol
    return beta * market + gamma * sectors[sector_of] + lagged_drift + noise, sector_of


def _ohlcv(
    rng: np.random.Generator, symbol: str, ts: np.ndarray, log_ret: np.ndarray, regime_vol: np.ndarray
) -> pl.DataFrame:
    bars = len(ts)
    close = rng.uniform(20, 200) * np.exp(np.cumsum(log_ret))
    prev_close = np.concatenate([[close[0] * np.exp(-log_ret[0])], close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, 0.25, size=bars) * regime_vol)  # overnight gap
    wick = np.abs(rng.normal(0.0, 0.5, size=(2, bars))) * regime_vol
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    activity = 1.0 + 40.0 * np.abs(log_ret) + regime_vol / _CALM_VOL
    volume = np.round(rng.lognormal(np.log(1e6), 0.3, size=bars) * activity)
    return pl.DataFrame(
        {
            "symbol": [symbol] * bars,
            "ts": pl.Series(ts).dt.replace_time_zone("UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
