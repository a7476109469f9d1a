"""Scores → target weights on the dense grid: strategy, sizing, limits, rebalance schedule.

Only finite scores take part: a NaN or missing score is weight 0 and is not counted in n (the
number of scored symbols on the row). Ties share the places they span, so a tie never falls to
a symbol's name (except inside top_k's n_drop hysteresis, which keeps a stable name order).
Every strategy's gross exposure Σ|w| is 1 on a row where it holds anything (before sizing
and limits), with k = max(1, floor(n · quantile)):

  long_short:   top k long 0.5/k each, bottom k short 0.5/k each (n ≥ 2)
  long_only:    top k long 1/k each
  top_k:        the top `top_k` long (1/k, or 0.5/k each side with top_k_short); `n_drop` limits
                how many holdings one rebalance may replace (Qlib's TopkDropout)
  threshold:    sign(score) where |score| > threshold, 1/m each for the m that pass
  proportional: w ∝ score − mean(score), scaled to Σ|w| = 1
  sign:         sign(score) / n  (kept for single-asset data)
  position:     clip(score, −1, 1) / n: the score is the symbol's position (a fine-tuned policy's
                scores, quant_cli.finetune); Σ|w| ≤ 1, and < 1 when positions are not all ±1

A book that compares symbols cannot trade a one-symbol universe: long_short, proportional,
top_k with top_k_short, score sizing and max_net = 0 would hold nothing and report `sharpe nan`.
`check_universe` refuses them before any work (SINGLE_SYMBOL names the strategies that can).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy.stats import rankdata

from quant_cli.errors import RecipeError

STRATEGIES = ("long_short", "long_only", "top_k", "threshold", "proportional", "sign", "position")
# strategies that trade one symbol on its own, suggested for forecasts ("position", for a policy's positions, can too)
SINGLE_SYMBOL = ("sign", "long_only", "threshold")
SIZINGS = ("equal", "score", "inverse_vol")
_WEEKDAYS = {"MON": 0, "TUE": 1, "WED": 2, "THU": 3, "FRI": 4, "SAT": 5, "SUN": 6}


def base_weights(S: np.ndarray, cfg: dict[str, Any], rebalance: np.ndarray) -> np.ndarray:
    """(T, N) weights of the strategy `cfg["strategy"]` from the score matrix S (NaN = unscored)."""
    finite = np.isfinite(S)
    n = finite.sum(axis=1, keepdims=True).astype(float)
    strategy = cfg["strategy"]
    if strategy == "top_k" and cfg.get("n_drop") is not None:
        return _top_k_dropout(S, int(cfg["top_k"]), int(cfg["n_drop"]), bool(cfg.get("top_k_short")), rebalance)
    with np.errstate(invalid="ignore", divide="ignore"):
        if strategy == "sign":
            w = np.sign(S) / n
        elif strategy == "position":
            w = np.clip(S, -1.0, 1.0) / n
        elif strategy == "threshold":
            passed = finite & (np.abs(np.where(finite, S, 0.0)) > cfg["threshold"])
            w = np.where(passed, np.sign(S), 0.0) / passed.sum(axis=1, keepdims=True)
        elif strategy == "proportional":
            d = S - row_mean(S)
            w = d / np.nansum(np.abs(d), axis=1, keepdims=True)
        else:
            w = _ranked(S, n, strategy, cfg)
    return np.where(finite & np.isfinite(w), w, 0.0)


def check_universe(cfg: dict[str, Any], at_once: int, symbols: list[str]) -> None:
    """RecipeError when `cfg` cannot hold anything with at most `at_once` symbols scored at one
    timestamp (`symbols`: every symbol scored): one line naming what can trade it."""
    if at_once >= 2:
        return
    need = _needs_two(cfg)
    if need is None:
        return
    names = ", ".join(symbols[:5]) + (", ..." if len(symbols) > 5 else "")
    universe = f"{at_once} ({names})" if len(symbols) <= at_once else f"{at_once} at once (of {len(symbols)}: {names})"
    raise RecipeError(
        f"{need} needs at least 2 symbols scored at one timestamp, but the universe has {universe}, "
        f"so it would never hold a position; {_single_symbol_fix(need)}"
    )


def universe_of(signal: pl.DataFrame) -> tuple[int, list[str]]:
    """(most symbols with a finite score at one timestamp, every such symbol, sorted) of a score frame."""
    scored = signal.filter(pl.col("score").cast(pl.Float64).is_finite())
    if scored.height == 0:
        return 0, []
    at_once = int(scored.group_by("ts").agg(pl.col("symbol").n_unique()).get_column("symbol").max())
    return at_once, sorted(scored["symbol"].cast(pl.String).unique().to_list())


def _needs_two(cfg: dict[str, Any]) -> str | None:
    """The setting that compares symbols (and so needs two), or None."""
    strategy = cfg.get("strategy")
    if strategy in ("long_short", "proportional"):
        return f"backtest.strategy = {strategy!r}"
    if strategy == "top_k" and cfg.get("top_k_short"):
        return "backtest.strategy = 'top_k' with top_k_short"
    if cfg.get("sizing") == "score":
        return "backtest.sizing = 'score' (|score − cross-sectional mean|)"
    if cfg.get("max_net") == 0:
        return "backtest.max_net = 0 (a lone symbol's position is all net)"
    return None


def _single_symbol_fix(need: str) -> str:
    if need.startswith("backtest.sizing"):
        return "use sizing 'equal' or 'inverse_vol' (e.g. --set backtest.sizing=equal)"
    if need.startswith("backtest.max_net"):
        return "raise backtest.max_net or leave it unset"
    return (
        f"use a strategy that trades one symbol: {', '.join(repr(s) for s in SINGLE_SYMBOL)} "
        "(e.g. --set backtest.strategy=sign), or add symbols to the dataset"
    )


def row_mean(S: np.ndarray) -> np.ndarray:
    """(T, 1) mean of each row's finite values (NaN for a row without any)."""
    finite = np.isfinite(S)
    count = finite.sum(axis=1, keepdims=True)
    total = np.where(finite, S, 0.0).sum(axis=1, keepdims=True)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def holding_notice(cfg: dict[str, Any], symbols: int) -> str | None:
    """A top_k book that holds every scored symbol is the equal-weight universe (long and short
    halves with top_k_short), not a selection by score: one line saying so, else None."""
    if cfg.get("strategy") != "top_k" or symbols == 0:
        return None
    short = bool(cfg.get("top_k_short"))
    if (2 if short else 1) * int(cfg["top_k"]) < symbols:
        return None
    held = f"the top and bottom {symbols // 2} each date" if short else "all of them each date, equally weighted"
    return (
        f"backtest.top_k = {cfg['top_k']}{' with top_k_short' if short else ''} "
        f"but only {symbols} symbol(s) are scored: "
        f"the book holds {held}; lower top_k to trade a selection by score"
    )


def _ranked(S: np.ndarray, n: np.ndarray, strategy: str, cfg: dict[str, Any]) -> np.ndarray:
    """Quantile and top-k books: a tie group spanning places lo..hi gets its share of the bucket."""
    lo = rankdata(S, method="min", axis=1, nan_policy="omit")
    hi = rankdata(S, method="max", axis=1, nan_policy="omit")
    if strategy == "top_k":
        short = bool(cfg.get("top_k_short"))
        k = np.minimum(float(cfg["top_k"]), np.floor(n / 2) if short else n)
        two_sided = short
    else:
        k = np.maximum(1.0, np.floor(n * cfg["quantile"]))
        two_sided = strategy == "long_short"
    size = hi - lo + 1
    in_top = np.clip(hi - np.maximum(lo - 1, n - k), 0, None) / size
    in_bottom = np.clip(np.minimum(hi, k) - (lo - 1), 0, None) / size
    if not two_sided:
        return np.where(n >= 1, in_top / k, 0.0)
    return np.where(n >= 2, 0.5 / k * (in_top - in_bottom), 0.0)


def _top_k_dropout(S: np.ndarray, k: int, n_drop: int, short: bool, rebalance: np.ndarray) -> np.ndarray:
    """Qlib's TopkDropout, long side (and the mirror image short): at each rebalance the n_drop
    worst of holdings + best outsiders are sold if held, and as many best outsiders bought as
    keeps k names. The holdings depend on the last rebalance's, so this walks the rebalance rows
    (one vectorised step each), the one path-dependent part of the engine."""
    long = _dropout_side(S, k, n_drop, rebalance)
    if not short:
        return long / np.maximum(long.sum(axis=1, keepdims=True), 1.0)
    shorts = _dropout_side(np.where(np.isfinite(S), -S, np.nan), k, n_drop, rebalance)
    shorts = shorts * (long == 0)  # never long and short the same name (tiny cross-sections)
    return 0.5 * long / np.maximum(long.sum(axis=1, keepdims=True), 1.0) - 0.5 * shorts / np.maximum(
        shorts.sum(axis=1, keepdims=True), 1.0
    )


def _dropout_side(S: np.ndarray, k: int, n_drop: int, rebalance: np.ndarray) -> np.ndarray:
    T, N = S.shape
    out = np.zeros((T, N), bool)
    held = np.zeros(N, bool)
    for t in np.flatnonzero(rebalance):
        score = np.where(np.isfinite(S[t]), S[t], -np.inf)
        held &= np.isfinite(S[t])  # an unscored holding is closed
        order = np.argsort(-score, kind="stable")
        outsiders = [i for i in order if not held[i] and np.isfinite(score[i])]
        today = outsiders[: max(n_drop + k - held.sum(), 0)]
        comb = sorted([*np.flatnonzero(held), *today], key=lambda i: -score[i])
        sell = [i for i in comb[len(comb) - n_drop :] if held[i]] if n_drop > 0 else []
        buy = today[: len(sell) + k - int(held.sum())]
        held[sell] = False
        held[buy] = True
        out[t] = held
    return out.astype(float)


def size(base: np.ndarray, S: np.ndarray, vol: np.ndarray | None, sizing: str) -> np.ndarray:
    """Re-weight within each side, keeping each side's gross: equal (as the strategy gave),
    score (∝ |score − row mean|) or inverse_vol (∝ 1/σ, the trailing volatility known at t;
    a symbol without one yet is not held)."""
    if sizing == "equal":
        return base
    if sizing == "score":
        magnitude = np.abs(S - row_mean(S))
    else:
        with np.errstate(divide="ignore"):
            magnitude = 1.0 / vol
    raw = base * np.where(np.isfinite(magnitude), magnitude, 0.0)
    return _side_scaled(raw, base)


def _side_scaled(raw: np.ndarray, like: np.ndarray) -> np.ndarray:
    out = np.zeros_like(raw)
    for sign in (1.0, -1.0):
        side = np.where(np.sign(raw) == sign, raw, 0.0)
        want = np.where(np.sign(like) == sign, like, 0.0).sum(axis=1, keepdims=True)
        have = side.sum(axis=1, keepdims=True)
        out += np.divide(side * want, have, out=np.zeros_like(side), where=have != 0)
    return out


def limit(W: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """max_weight clips each |w|; max_net shrinks the larger side until |Σw| ≤ max_net;
    max_gross scales the row down until Σ|w| ≤ max_gross. Nothing is scaled up; an absent or
    None limit does not apply."""
    if cfg.get("max_weight") is not None:
        W = np.clip(W, -cfg["max_weight"], cfg["max_weight"])
    if cfg.get("max_net") is not None:
        longs, shorts = np.where(W > 0, W, 0.0), np.where(W < 0, W, 0.0)
        L, Sh = longs.sum(axis=1, keepdims=True), -shorts.sum(axis=1, keepdims=True)
        cap = cfg["max_net"]
        long_scale = np.where(L - Sh > cap, np.divide(Sh + cap, L, out=np.ones_like(L), where=L > 0), 1.0)
        short_scale = np.where(Sh - L > cap, np.divide(L + cap, Sh, out=np.ones_like(Sh), where=Sh > 0), 1.0)
        W = longs * long_scale + shorts * short_scale
    gross = np.abs(W).sum(axis=1, keepdims=True)
    cap = cfg.get("max_gross")
    if cap is None:
        return W
    return W * np.where(gross > cap, cap / np.where(gross > 0, gross, 1.0), 1.0)


def rebalance_rows(ts: pl.Series, every: int, calendar: str | None) -> np.ndarray:
    """Rows whose target is traded: every `every`-th row from the first, or with a calendar the
    last row of each period ('D', 'W-FRI' weeks ending Friday, 'M' months, 'Q' quarters)."""
    T = ts.len()
    if not calendar:
        return np.arange(T) % max(every, 1) == 0
    period = calendar_period(ts, calendar)
    return np.append(period[1:] != period[:-1], True) if T else np.zeros(0, bool)


def calendar_period(ts: pl.Series, calendar: str) -> np.ndarray:
    days = ts.dt.date().cast(pl.Int32).to_numpy().astype(np.int64)  # days since 1970-01-01 (a Thursday)
    rule = calendar.upper()
    if rule == "D":
        return days
    if rule.startswith("W-") and rule[2:] in _WEEKDAYS:
        weekday = (days + 3) % 7
        return days + (_WEEKDAYS[rule[2:]] - weekday) % 7  # the week's last day
    if rule in ("M", "Q"):
        date = ts.dt.date()
        month = (date.dt.year().cast(pl.Int64) * 12 + date.dt.month().cast(pl.Int64) - 1).to_numpy()
        return month if rule == "M" else month // 3
    raise RecipeError(
        f"backtest.rebalance {calendar!r} is not a calendar; use 'D', 'W-FRI' (any weekday MON..SUN), 'M' or 'Q'"
    )
