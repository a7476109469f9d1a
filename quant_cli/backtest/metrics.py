"""Prediction quality: information coefficients per timestamp, and error measures.

IC is the mean over timestamps of the cross-sectional correlation between score and label
(Spearman for rank IC); ICIR is that mean over its standard deviation. With a single symbol there
is no cross-section, so the correlation is taken over the pooled rows instead (`ic_kind`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl


def prediction_metrics(pred: pl.DataFrame) -> dict[str, Any]:
    """`pred` has symbol, ts, score, label."""
    if pred.height == 0:
        return {"rows": 0}
    by_ts = pred.group_by("ts").agg(
        pl.corr("score", "label").alias("ic"),
        pl.corr("score", "label", method="spearman").alias("rank_ic"),
        pl.len().alias("n"),
    ).filter(pl.col("n") >= 2)
    cross_sectional = by_ts.height > 0 and by_ts["ic"].drop_nans().drop_nulls().len() > 0
    ic, rank_ic, icir = _cross_sectional(by_ts) if cross_sectional else _pooled(pred)
    err = pred.select(
        ((pl.col("score") - pl.col("label")) ** 2).mean().sqrt().alias("rmse"),
        (pl.col("score") - pl.col("label")).abs().mean().alias("mae"),
        (pl.col("score").sign() == pl.col("label").sign()).mean().alias("hit_rate"),
    ).row(0, named=True)
    return {
        "ic": ic, "rank_ic": rank_ic, "icir": icir, "ic_kind": "cross_sectional" if cross_sectional else "pooled",
        **{k: _clean(v) for k, v in err.items()},
        "rows": pred.height, "symbols": pred["symbol"].n_unique(), "timestamps": pred["ts"].n_unique(),
    }


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
    """accuracy, log loss and AUC (one-vs-rest macro when more than two classes) from p_<class>."""
    prob_cols = [c for c in pred.columns if c.startswith("p_")]
    if not prob_cols or pred.height == 0:
        return {}
    from sklearn.metrics import log_loss, roc_auc_score

    classes = np.array([float(c[2:]) for c in prob_cols])
    proba = pred.select(prob_cols).to_numpy()
    y = pred["label"].to_numpy()
    out = {"accuracy": float((classes[proba.argmax(axis=1)] == y).mean())}
    out["log_loss"] = float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=classes))
    present = np.isin(classes, y)
    if present.sum() < 2:
        out["auc"] = float("nan")  # AUC needs both outcomes in the segment
    elif len(classes) == 2:
        out["auc"] = float(roc_auc_score(y == classes[1], proba[:, 1]))
    else:
        out["auc"] = float(roc_auc_score(y, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr", labels=classes))
    return out
