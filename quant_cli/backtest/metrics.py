"""Prediction quality: information coefficients per timestamp, and error measures.

With S_t the rows at timestamp t (score and label both finite), counted only where |S_t| >= 5
(MIN_CROSS_SECTION; with 2 or 3 symbols every per-timestamp correlation is near ±1 and means nothing):
  IC       = mean_t pearson(score, label | S_t)
  rank IC  = mean_t pearson(rank(score), rank(label) | S_t), ranks averaged over ties (Spearman)
  ICIR     = mean_t IC_t / std_t IC_t (sample std, ddof = 1; not annualised)
With no timestamp of 5 scored symbols there is no usable cross-section, so IC and rank IC are taken
over the pooled rows (a time-series correlation) instead and ICIR is NaN (`ic_kind` says which). A
row whose score or label is NaN or null is not scored: it is left out of every measure here (a NaN
must never rank first), and `unscored` counts it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import polars as pl


def prediction_metrics(pred: pl.DataFrame) -> dict[str, Any]:
    """`pred` has symbol, ts, score, label.

    Besides the ICs: rmse = sqrt(mean((score - label)^2)), mae = mean(|score - label|),
    hit_rate = share of rows with sign(score) == sign(label).
    """
    if pred.height == 0:
        return {"rows": 0}
    scored = scored_rows(pred)
    by_ts = ic_by_timestamp(scored)
    cross_sectional = by_ts.height > 0 and by_ts["ic"].drop_nans().drop_nulls().len() > 0
    ic, rank_ic, icir = _cross_sectional(by_ts) if cross_sectional else _pooled(scored)
    err = scored.select(
        ((pl.col("score") - pl.col("label")) ** 2).mean().sqrt().alias("rmse"),
        (pl.col("score") - pl.col("label")).abs().mean().alias("mae"),
        (pl.col("score").sign() == pl.col("label").sign()).mean().alias("hit_rate"),
    ).row(0, named=True)
    return {
        "ic": ic,
        "rank_ic": rank_ic,
        "icir": icir,
        "ic_kind": "cross_sectional" if cross_sectional else "pooled",
        **{k: _clean(v) for k, v in err.items()},
        "rows": pred.height,
        "unscored": pred.height - scored.height,
        "symbols": pred["symbol"].n_unique(),
        "timestamps": pred["ts"].n_unique(),
    }


MIN_CROSS_SECTION = 5


def ic_by_timestamp(pred: pl.DataFrame) -> pl.DataFrame:
    """ts, ic, rank_ic, n at each timestamp with at least MIN_CROSS_SECTION scored rows, sorted by ts."""
    scored = scored_rows(pred)
    return (
        scored.group_by("ts")
        .agg(
            pl.corr("score", "label").alias("ic"),
            pl.corr("score", "label", method="spearman").alias("rank_ic"),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") >= MIN_CROSS_SECTION)
        .sort("ts")
    )


def scored_rows(pred: pl.DataFrame) -> pl.DataFrame:
    """Rows with a finite score and label (polars ranks NaN above every number)."""
    both = pred.with_columns(pl.col("score", "label").cast(pl.Float64))
    return both.filter(pl.col("score").is_finite() & pl.col("label").is_finite())


def _cross_sectional(by_ts: pl.DataFrame) -> tuple[float, float, float]:
    ic = by_ts["ic"].fill_nan(None).drop_nulls()
    rank = by_ts["rank_ic"].fill_nan(None).drop_nulls()
    std = ic.std()
    icir = ic.mean() / std if std else float("nan")
    return _clean(ic.mean()), _clean(rank.mean()), _clean(icir)


def _pooled(pred: pl.DataFrame) -> tuple[float, float, float]:
    row = pred.select(
        pl.corr("score", "label").alias("ic"), pl.corr("score", "label", method="spearman").alias("rank_ic")
    ).row(0)
    return _clean(row[0]), _clean(row[1]), float("nan")


def _clean(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def classification_metrics(pred: pl.DataFrame) -> dict[str, Any]:
    """accuracy, log loss and AUC from the p_<class> probability columns.

    accuracy = share of rows whose most probable class is the label;
    log_loss = -mean(log p_label), probabilities clipped to [1e-15, 1] and each row renormalised;
    auc      = P(p_pos of a positive row > p_pos of a negative row), ties counting one half
               (two classes; the positive class is the larger label), or the mean of the
               one-vs-rest AUCs over the classes present (macro) when there are more than two.
    """
    prob_cols = [c for c in pred.columns if c.startswith("p_")]
    if not prob_cols or pred.height == 0:
        return {}
    from sklearn.metrics import log_loss

    classes = np.array([float(c[2:]) for c in prob_cols])
    proba = pred.select(prob_cols).to_numpy()
    y = pred["label"].to_numpy()
    out = {"accuracy": float((classes[proba.argmax(axis=1)] == y).mean())}
    clipped = np.clip(proba, 1e-15, 1.0)
    out["log_loss"] = float(log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=classes))
    out["auc"] = _auc(y, proba, classes)
    return out


def _auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Binary AUC, or the macro mean of one-vs-rest AUCs over the classes present in the segment
    (a class with no row has no AUC; averaging it in would make every such segment NaN)."""
    from sklearn.metrics import roc_auc_score

    present = [i for i, c in enumerate(classes) if (y == c).any()]
    if len(present) < 2:
        return float("nan")  # AUC needs both outcomes in the segment
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    return float(np.mean([roc_auc_score(y == classes[i], proba[:, i]) for i in present]))


# ---- Sharpe ratio statistics (Bailey & López de Prado) -------------------------------------------

EULER_GAMMA = 0.5772156649015329
# The standard normal from the standard library: as exact as scipy's for these scalars, and
# `runs ls` deflates thousands of Sharpe ratios without importing scipy.stats (~1 s).
_NORMAL = statistics.NormalDist()


def probabilistic_sharpe_ratio(
    sharpe: float, periods: int, skew: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """PSR(SR*) = Φ( (SR − SR*)·√(T − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4 · SR²) ).

    `sharpe` and `benchmark` are per period (not annualised), T = `periods` returns, γ₃ their
    skewness and γ₄ their **raw** kurtosis (3 for a normal distribution). Popular libraries pass
    excess kurtosis here, which understates the Sharpe ratio's standard error. NaN when T < 2 or
    the variance term is not positive.
    """
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if periods < 2 or not all(map(math.isfinite, (sharpe, skew, kurtosis, benchmark))) or variance <= 0:
        return float("nan")
    return _NORMAL.cdf((sharpe - benchmark) * math.sqrt(periods - 1) / math.sqrt(variance))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR₀ = √V[SR] · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), γ = Euler–Mascheroni:
    the Sharpe ratio (per period) the best of N unskilled trials is expected to reach, given the
    variance V[SR] of the trials' per-period Sharpe ratios. 0 for a single trial."""
    if n_trials <= 1 or not math.isfinite(sharpe_variance) or sharpe_variance <= 0:
        return 0.0
    quantiles = (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(
        1 - 1 / (n_trials * math.e)
    )
    return float(math.sqrt(sharpe_variance) * quantiles)


def deflated_sharpe_ratio(
    sharpe: float, periods: int, skew: float, kurtosis: float, n_trials: int, sharpe_variance: float
) -> float:
    """DSR = PSR(SR₀) with SR₀ = expected_max_sharpe(N, V[SR]) (Bailey & López de Prado 2014):
    the probability that the true Sharpe ratio is positive after selecting the best of N trials.
    Everything per period, kurtosis raw."""
    return probabilistic_sharpe_ratio(sharpe, periods, skew, kurtosis, expected_max_sharpe(n_trials, sharpe_variance))


# ---- portfolio returns ----------------------------------------------------------------------------


def summarize(curve: pl.DataFrame, periods_per_year: float) -> dict[str, Any]:
    """Summary of the net returns r_1..r_n of `curve` (columns ts, net, equity, turnover, cost and,
    when present, exposure, net_exposure, benchmark), with E_i = prod_{j<=i} (1 + r_j), E_0 = 1,
    ppy the periods per year and every ratio NaN when its denominator is 0:

      total_return      = E_n − 1
      annual_return     = E_n^(ppy/n) − 1                                (−1 once the equity is gone)
      annual_volatility = std(r, ddof=1)·√ppy
      sharpe            = mean(r)/std(r, ddof=1)·√ppy                    (risk-free rate 0)
      sortino           = mean(r)/√mean(min(r, 0)²)·√ppy                 (downside deviation, target 0)
      max_drawdown      = min_i E_i / max(E_0..E_i) − 1  (≤ 0; E_0 counts: a −10% first period is −10%)
      max_drawdown_periods = longest run of periods spent below a previous peak (recovered or not)
      calmar            = annual_return / |max_drawdown|
      hit_rate          = share of periods with r > 0 (flat periods count as misses)
      profit_factor     = Σ gains / Σ losses of the PnL in currency, r_i·E_(i−1)
      omega             = Σ max(r, 0) / Σ max(−r, 0)                     (threshold 0, on returns)
      tail_ratio        = |q95(r)| / |q5(r)|                             (linear percentiles)
      var_95, cvar_95   = q5(r), mean of r ≤ q5(r)                       (historical, per period)
      skew, kurtosis    = sample skewness and RAW kurtosis (3 for normal returns), population moments
      psr               = probabilistic_sharpe_ratio(per-period Sharpe, n, skew, kurtosis) vs 0
      mean_turnover     = mean Σ_i |traded_i| per period; annual_turnover = mean_turnover·ppy
      avg_holding_periods = 2·mean(exposure)/mean_turnover (a round trip trades the position twice)
      exposure, net_exposure = mean Σ|w| and mean Σw
      beta              = cov(r, b)/var(b) against the benchmark returns b (ddof 1)
      alpha             = (mean(r) − beta·mean(b))·ppy                   (annualised, arithmetic)
      information_ratio = mean(r − b)/std(r − b, ddof=1)·√ppy
      net_exposure_share = |net_exposure| / exposure                   (1: the book is all one way)
      mostly_market     = net_exposure_share ≥ NET_SHARE_LIMIT or |beta| ≥ BETA_LIMIT (market_exposure)
    """
    n = curve.height
    if n == 0:
        return {"periods": 0}
    r = curve["net"].to_numpy().astype(float)
    equity = curve["equity"].to_numpy()
    out = {
        "periods": n,
        "start": curve["ts"][0].isoformat(),
        "end": curve["ts"][-1].isoformat(),
        **_returns(r, equity, periods_per_year),
        **_distribution(r, equity, periods_per_year),
        **_trading(curve, periods_per_year),
    }
    if "benchmark" in curve.columns:
        out.update(relative_metrics(r, curve["benchmark"].fill_null(0.0).to_numpy(), periods_per_year))
    out.update(market_exposure(out))
    out["periods_per_year"] = periods_per_year
    return out


# A book whose mean net exposure is at least 80% of its gross is one bet on the market's direction,
# and one with |beta| >= 0.5 takes at least half the benchmark's moves: its Sharpe ratio then
# mostly measures the market's drift (a sign strategy on an up-trending pair, any long-only
# book), and alpha and the information ratio say what the signal added.
NET_SHARE_LIMIT = 0.8
BETA_LIMIT = 0.5


def market_exposure(summary: dict[str, Any]) -> dict[str, Any]:
    """net_exposure_share and mostly_market of a summary (see summarize; NaN and False without exposure)."""
    gross, net, beta = (summary.get(k, float("nan")) for k in ("exposure", "net_exposure", "beta"))
    share = abs(net) / gross if isinstance(gross, float) and gross > 0 else float("nan")
    mostly = (math.isfinite(share) and share >= NET_SHARE_LIMIT) or (math.isfinite(beta) and abs(beta) >= BETA_LIMIT)
    return {"net_exposure_share": share, "mostly_market": bool(mostly)}


def market_exposure_note(summary: dict[str, Any]) -> str | None:
    """One sentence for the summary line and the report when the result is mostly market
    exposure (summary["mostly_market"]), naming why and the alpha and information ratio; else None."""
    if not summary.get("mostly_market"):
        return None
    market = summary.get("market") or "the equal-weight universe"
    return (
        f"mostly market exposure (net exposure {_num(summary.get('net_exposure'), '.2f')} of gross "
        f"{_num(summary.get('exposure'), '.2f')}, beta {_num(summary.get('beta'), '.2f')} to {market}): "
        f"alpha {_num(summary.get('alpha'), '.2%')}/yr, "
        f"information ratio {_num(summary.get('information_ratio'), '.2f')}"
    )


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and math.isfinite(b) else float("nan")


def _returns(r: np.ndarray, equity: np.ndarray, ppy: float) -> dict[str, float]:
    std = float(r.std(ddof=1)) if r.size > 1 else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    final = float(equity[-1])
    growth = math.log(final) * ppy / r.size if final > 0 else -math.inf
    annual = math.expm1(growth) if growth < 700 else math.inf  # a short lucky run can overflow a float
    drawdown = drawdown_series(equity)
    mdd = float(drawdown.min())
    return {
        "total_return": final - 1.0,
        "annual_return": annual,
        "annual_volatility": std * math.sqrt(ppy),
        "sharpe": _ratio(float(r.mean()), std) * math.sqrt(ppy) if std > 0 else float("nan"),
        "sortino": _ratio(float(r.mean()), downside) * math.sqrt(ppy) if downside > 0 else float("nan"),
        "max_drawdown": mdd,
        "max_drawdown_periods": _longest_underwater(drawdown),
        "calmar": _ratio(annual, abs(mdd)),
    }


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """E_i / max(E_0..E_i) − 1 with E_0 = 1, for i = 1..n."""
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return np.minimum(equity / peak - 1.0, 0.0)


def _longest_underwater(drawdown: np.ndarray) -> int:
    under = np.concatenate([[0], (drawdown < 0).astype(int), [0]])
    edges = np.flatnonzero(np.diff(under))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _distribution(r: np.ndarray, equity: np.ndarray, ppy: float) -> dict[str, float]:
    from scipy.stats import kurtosis, skew

    pnl = r * np.concatenate([[1.0], equity[:-1]])
    q5, q95 = (float(np.percentile(r, q)) for q in (5, 95))
    varied = r.size > 2 and float(r.std()) > 0
    sk = float(skew(r)) if varied else float("nan")
    ku = float(kurtosis(r, fisher=False)) if varied else float("nan")
    std = float(r.std(ddof=1)) if r.size > 1 else 0.0
    return {
        "hit_rate": float((r > 0).mean()),
        "profit_factor": _ratio(float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())),
        "omega": _ratio(float(np.maximum(r, 0).sum()), float(np.maximum(-r, 0).sum())),
        "tail_ratio": _ratio(abs(q95), abs(q5)),
        "var_95": q5,
        "cvar_95": float(r[r <= q5].mean()),
        "best_period": float(r.max()),
        "worst_period": float(r.min()),
        "skew": sk,
        "kurtosis": ku,
        "psr": probabilistic_sharpe_ratio(float(r.mean()) / std, r.size, sk, ku) if std > 0 else float("nan"),
    }


def _trading(curve: pl.DataFrame, ppy: float) -> dict[str, float]:
    turnover = float(curve["turnover"].mean())
    out = {"mean_turnover": turnover, "annual_turnover": turnover * ppy, "total_cost": float(curve["cost"].sum())}
    if "exposure" in curve.columns:
        exposure = float(curve["exposure"].mean())
        out.update(
            exposure=exposure,
            net_exposure=float(curve["net_exposure"].mean()),
            avg_holding_periods=_ratio(2.0 * exposure, turnover),
        )
    return out


def relative_metrics(r: np.ndarray, b: np.ndarray, ppy: float) -> dict[str, float]:
    """beta, alpha, information_ratio against benchmark returns b (see summarize)."""
    if r.size < 2:
        return {"beta": float("nan"), "alpha": float("nan"), "information_ratio": float("nan")}
    beta = _ratio(float(np.cov(r, b, ddof=1)[0, 1]), float(b.var(ddof=1)))
    active = r - b
    return {
        "beta": beta,
        "alpha": (float(r.mean()) - beta * float(b.mean())) * ppy if math.isfinite(beta) else float("nan"),
        "information_ratio": _ratio(float(active.mean()), float(active.std(ddof=1))) * math.sqrt(ppy),
    }


def rolling_sharpe(r: np.ndarray, window: int, ppy: float) -> np.ndarray:
    """Annualised Sharpe of the last `window` returns at each period (NaN before a full window)."""
    out = np.full(r.size, np.nan)
    if r.size < window or window < 2:
        return out
    view = np.lib.stride_tricks.sliding_window_view(r, window)
    std = view.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[window - 1 :] = np.where(std > 0, view.mean(axis=1) / std * math.sqrt(ppy), np.nan)
    return out
