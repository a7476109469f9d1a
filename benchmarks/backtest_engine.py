"""Target-weight backtest with costs: qfactory's engine against vectorbt (not a test).

Both get the same (bars × symbols) target weights, rebalanced every bar, and the same fill
prices (row t fills at P_t and is marked at P_{t+1}), commission and slippage. vectorbt runs
`Portfolio.from_orders(size_type="targetpercent", group_by=True, cash_sharing=True,
call_seq="auto")` after a JIT warm-up on a small panel. The book is dollar-neutral with gross
0.5, so vectorbt never runs short of cash and both fill every order (vectorbt trims an order it
cannot pay for, which our engine does not model). vectorbt starts with 1e9 of cash because it
ignores orders below 1e-12 shares, which at a capital of 1 would skip tiny rebalancing trades our
engine fills (different fills, not different arithmetic). Timed:

  ours (core)  net_returns() on the dense matrices — what vectorbt is given: the book's drift,
               trades, costs and net returns (the equity curve), without materialising the
               (bars × symbols) held-weight tables
  ours (full)  run_backtest() from long (symbol, ts, weight) frames and bars: the grid, the
               returns, the book, the curve, weights/trades tables and every metric

    python benchmarks/backtest_engine.py [--symbols 1000] [--bars 5000] [--repeat 3]

vectorbt is a benchmark-only dependency (`pip install vectorbt`); without it ours is timed alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import polars as pl

from quant_cli.backtest.engine import run_backtest
from quant_cli.backtest.simulate import Costs, net_returns

COMMISSION, SLIPPAGE = 0.0005, 0.0002


def panel(symbols: int, bars: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prices (bars + 1, symbols) and dollar-neutral targets (bars, symbols) with gross 0.5."""
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars + 1, symbols)), axis=0))
    raw = rng.normal(size=(bars, symbols))
    raw -= raw.mean(axis=1, keepdims=True)
    return prices, 0.5 * raw / np.abs(raw).sum(axis=1, keepdims=True)


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def ours_core(prices: np.ndarray, W: np.ndarray) -> float:
    R = prices[1:] / prices[:-1] - 1.0
    net = net_returns(W, R, np.ones(W.shape[0], bool), Costs(commission=COMMISSION, slippage=SLIPPAGE))
    return float(np.prod(1.0 + net))


def long_frames(prices: np.ndarray, W: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bars whose next_close fills reproduce `prices`: close of bar t+1 = P_t (bar 0 is a lead-in)."""
    T, N = W.shape
    start = dt.datetime(2000, 1, 3, tzinfo=dt.timezone.utc)
    ts = pl.datetime_range(start, start + dt.timedelta(days=T + 1), "1d", eager=True, time_zone="UTC").cast(
        pl.Datetime("us", "UTC")
    )
    symbols = [f"S{i:04d}" for i in range(N)]
    close = np.vstack([prices[:1], prices])  # T + 2 bars
    bars = pl.DataFrame({"symbol": np.repeat(symbols, T + 2), "ts": pl.concat([ts] * N), "close": close.T.ravel()})
    weights = pl.DataFrame({"symbol": np.repeat(symbols, T), "ts": pl.concat([ts[:T]] * N), "weight": W.T.ravel()})
    return bars, weights


def ours_full(bars: pl.DataFrame, weights: pl.DataFrame) -> float:
    cfg = {"execution": "next_close", "cost_bps": COMMISSION * 1e4, "slippage_bps": SLIPPAGE * 1e4, "max_gross": 10.0}
    return float(run_backtest(weights, bars, cfg, 252, kind="weight").curve["equity"][-1])


def vectorbt_final(vbt, prices: np.ndarray, W: np.ndarray) -> float:
    import pandas as pd

    size = np.vstack([W, np.full((1, W.shape[1]), np.nan)])  # the last row only marks the book
    index = pd.date_range("2000-01-03", periods=prices.shape[0], freq="D")
    pf = vbt.Portfolio.from_orders(
        close=pd.DataFrame(prices, index=index),
        size=pd.DataFrame(size, index=index),
        size_type="targetpercent",
        fees=COMMISSION,
        slippage=SLIPPAGE,
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        init_cash=1e9,
        freq="D",
    )
    return float(pf.value().iloc[-1]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prices, W = panel(args.symbols, args.bars)
    print(
        f"{args.symbols:,} symbols x {args.bars:,} bars, rebalanced every bar, "
        f"commission {COMMISSION * 1e4:g} bps, slippage {SLIPPAGE * 1e4:g} bps"
    )
    core_s, core_final = best_of(args.repeat, lambda: ours_core(prices, W))
    bars, weights = long_frames(prices, W)
    full_s, full_final = best_of(args.repeat, lambda: ours_full(bars, weights))
    print(f"ours (core net_returns):  {core_s:8.3f} s   final equity {core_final:.12f}")
    print(f"ours (full run_backtest): {full_s:8.3f} s   final equity {full_final:.12f}")
    try:
        import vectorbt as vbt
    except ImportError:
        print("vectorbt: not installed (pip install vectorbt); ours timed alone")
        return
    small_p, small_w = panel(5, 50, seed=1)
    vectorbt_final(vbt, small_p, small_w)  # JIT warm-up
    vbt_s, vbt_final = best_of(args.repeat, lambda: vectorbt_final(vbt, prices, W))
    print(f"vectorbt from_orders:     {vbt_s:8.3f} s   final equity {vbt_final:.12f}")
    print(f"ratio vectorbt / ours: core {vbt_s / core_s:.2f}x, full {vbt_s / full_s:.2f}x")
    rel = max(abs(core_final / vbt_final - 1.0), abs(full_final / vbt_final - 1.0))
    print(
        f"largest relative final-equity difference vs vectorbt: {rel:.2e} "
        f"({'within' if rel <= 1e-9 else 'OUTSIDE'} 1e-9)"
    )


if __name__ == "__main__":
    main()
