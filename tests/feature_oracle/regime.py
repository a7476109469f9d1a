"""The "regime" set's polars definitions (the oracle of quant_cli/features/regime.py's kernels)."""

from __future__ import annotations

import polars as pl

from feature_oracle._registry import register

VOL_HISTORY = 252
HMM_FEATURE = "regime_hmm_p_high"


def _log_return() -> pl.Expr:
    return pl.col("close").log().diff()


def _vol_percentile(w: int) -> pl.Expr:
    vol = _log_return().rolling_std(w, min_samples=w)
    return (vol.rolling_rank(VOL_HISTORY, method="average", min_samples=VOL_HISTORY) - 1.0) / (VOL_HISTORY - 1.0)


@register("regime_vol_pct_{w}")
def regime_vol_pct(w: int) -> pl.Expr:
    return _vol_percentile(w)


@register("regime_vol_state_{w}")
def regime_vol_state(w: int) -> pl.Expr:
    pct = _vol_percentile(w)
    return pl.when(pct < 1.0 / 3.0).then(-1.0).when(pct > 2.0 / 3.0).then(1.0).when(pct.is_not_null()).then(0.0)


@register(HMM_FEATURE)
def regime_hmm_observation() -> pl.Expr:
    return _log_return()
