"""Prediction quality: information coefficients per timestamp, and error measures.

With S_t the rows at timestamp t (at least two, score and label both finite):
  IC       = mean_t pearson(score, label | S_t)
  rank IC  = mean_t pearson(rank(score), rank(label) | S_t), ranks averaged over ties (Spearman)
  ICIR     = mean_t IC_t / std_t IC_t (sample std, ddof = 1; not annualised)
With a single symbol there is no cross-section, so IC and rank IC are taken over the pooled rows
instead and ICIR is NaN (`ic_kind` says which). A row whose score or label is NaN or null is not
scored: it is left out of every measure here (a NaN must never rank first), and `unscored` counts it.
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
    scored = _scored(pred)
    by_ts = scored.group_by("ts", maintain_order=True).agg(  # a fixed order: the mean of the ICs is then bit-for-bit repeatable
        pl.corr("score", "label").alias("ic"),
        pl.corr("score", "label", method="spearman").alias("rank_ic"),
        pl.len().alias("n"),
    ).filter(pl.col("n") >= 2)
    cross_sectional = by_ts.height > 0 and by_ts["ic"].drop_nans().drop_nulls().len() > 0
    ic, rank_ic, icir = _cross_sectional(by_ts) if cross_sectional else _pooled(scored)
    err = scored.select(
        ((pl.col("score") - pl.col("label")) ** 2).mean().sqrt().alias("rmse"),
        (pl.col("score") - pl.col("label")).abs().mean().alias("mae"),
        (pl.col("score").sign() == pl.col("label").sign()).mean().alias("hit_rate"),
    ).row(0, named=True)
    return {
        "ic": ic, "rank_ic": rank_ic, "icir": icir, "ic_kind": "cross_sectional" if cross_sectional else "pooled",
        **{k: _clean(v) for k, v in err.items()},
        "rows": pred.height, "unscored": pred.height - scored.height,
        "symbols": pred["symbol"].n_unique(), "timestamps": pred["ts"].n_unique(),
    }


def _scored(pred: pl.DataFrame) -> pl.DataFrame:
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


def probabilistic_sharpe_ratio(sharpe: float, periods: int, skew: float, kurtosis: float, benchmark: float = 0.0) -> float:
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
    quantiles = (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sharpe_variance) * quantiles)


def deflated_sharpe_ratio(sharpe: float, periods: int, skew: float, kurtosis: float, n_trials: int,
                          sharpe_variance: float) -> float:
    """DSR = PSR(SR₀) with SR₀ = expected_max_sharpe(N, V[SR]) (Bailey & López de Prado 2014):
    the probability that the true Sharpe ratio is positive after selecting the best of N trials.
    Everything per period, kurtosis raw."""
    return probabilistic_sharpe_ratio(sharpe, periods, skew, kurtosis, expected_max_sharpe(n_trials, sharpe_variance))
