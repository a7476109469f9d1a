"""Test helpers shared by several test files (fixtures live in conftest.py).

Import as `from helpers import ...`: pytest puts tests/ on sys.path (it has no __init__.py), for
`pytest` and `python -m pytest` alike, from the repository root or any fresh clone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from quant_cli.dataset.labels import cross_sectional, direction, forward_return, triple_barrier
from quant_cli.models.registry import model_class, torch_models
from quant_cli.recipe import load_recipe

# ---- panels with irregular calendars, and labels of every kind ----------------------------------


def random_bars(rng: np.random.Generator, n_symbols: int) -> pl.DataFrame:
    """Close-only symbols with different, irregular calendars (gaps of 1-3 days) and lengths."""
    frames = []
    for i in range(n_symbols):
        n = int(rng.integers(40, 120))
        days = np.cumsum(rng.integers(1, 4, size=n)) + int(rng.integers(0, 10))
        ts = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=int(d)) for d in days]
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        frames.append(pl.DataFrame({"symbol": f"S{i}", "ts": ts, "close": close}))
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


# kind -> (log returns, cross-sectional transform) for the forward-return family
_FORWARD = {
    "forward": (False, "none"),
    "cross_sectional_rank": (False, "rank"),
    "log_rank": (True, "rank"),
    "zscore": (False, "zscore"),
}
LABEL_KINDS = (*_FORWARD, "direction", "triple_barrier")


def labels_for(bars: pl.DataFrame, kind: str, horizon: int) -> pl.DataFrame:
    """Labels (symbol, ts, label, t1) of one kind, executed next_close; triple-barrier t1 is the
    touch time, so it varies row by row."""
    if kind == "triple_barrier":
        cfg = load_recipe(None)["label"] | {
            "kind": kind,
            "horizon": horizon,
            "profit_take": 1.0,
            "stop_loss": 1.0,
            "vol_span": 5,
        }
        return triple_barrier(bars, cfg, "next_close")
    if kind == "direction":
        return direction(bars, horizon, "next_close", 0.001)
    log, how = _FORWARD[kind]
    return cross_sectional(forward_return(bars, horizon, "next_close", log=log), how)


# ---- model inputs ------------------------------------------------------------------------------------


def model_panel(
    n_ts: int = 100,
    n_sym: int = 3,
    horizon: int = 3,
    seed: int = 0,
    task: str = "regression",
    n_features: int = 3,
    noise: float = 0.3,
) -> tuple[np.ndarray, ...]:
    """X, y, ts, t1, symbols for n_ts timestamps x n_sym symbols (rows ordered by time); y is
    linear in the first two features plus noise, or its -1/0/1 class for classification."""
    rng = np.random.default_rng(seed)
    n = n_ts * n_sym
    day = np.repeat(np.arange(n_ts), n_sym)
    ts = np.datetime64("2021-01-01", "us") + day.astype("timedelta64[D]")
    X = rng.normal(size=(n, n_features))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(scale=noise, size=n)
    if task == "classification":
        y = np.where(y > 0.3, 1.0, np.where(y < -0.3, -1.0, 0.0))
    symbols = np.tile(np.array([f"{chr(65 + i)}" for i in range(n_sym)]), n_ts)
    return X, y, ts, ts + np.timedelta64(horizon, "D"), symbols


# torch models in tests: each architecture's own fast-test settings (declared in its file), and a
# short loop (the [train] section's keys)
TORCH_FAST = {name: dict(cls.fast_test) for name, cls in torch_models().items()}
TRAIN_FAST = {"epochs": 15, "batch_size": 32, "learning_rate": 0.003, "patience": 0}


def params_for(name: str, task: str, fast: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Fast test parameters from `fast`; ensembles get two fast members that can do the task."""
    if model_class(name).family != "ensemble":
        return dict(fast.get(name, {}))
    first = "linear" if task == "regression" else "logistic"
    members = [{"name": first}, {"name": "lightgbm", "params": fast["lightgbm"]}]
    return {"members": members, **({"folds": 3} if name == "stacking" else {})}


def prices_rewritten_after(bars: pl.DataFrame, after: dt.datetime, seed: int = 0) -> pl.DataFrame:
    """`bars` with open/high/low/close of every bar after `after` scaled by random factors (the
    same factor for a bar's four prices, so high >= low still holds): the leakage tests' future."""
    factor = pl.Series(np.exp(np.random.default_rng(seed).normal(0, 0.05, bars.height)))
    later = pl.col("ts") > after
    return bars.with_columns(
        pl.when(later).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )


# A small synthetic recipe (4 symbols x 400 bars, linear model) that several CLI test modules ingest once
# per module through conftest's `home` fixture.
SYN_RECIPE = """
[run]
name = "audit"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 4
bars = 400
[model]
name = "linear"
[train]
threads = 1
"""


# A recipe small enough for every stage (walk-forward and tune included) that ingests its own
# synthetic source: the first-command and the storage-fault tests run real processes on it.
TINY_RECIPE = """
[run]
name = "tiny"
seed = 3
[data]
dataset = "tiny"
source = "synthetic"
[data.synthetic]
symbols = 3
bars = 260
[features]
sets = ["core"]
[label]
horizon = 3
[model]
name = "lightgbm"
[model.params]
n_estimators = 20
[walkforward]
train = 120
test = 40
validation = 0
[tune]
trials = 1
[tune.space]
"model.params.num_leaves" = { int = [4, 8] }
"""
