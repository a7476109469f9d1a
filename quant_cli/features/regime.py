"""The "regime" set: causal market-state features of one symbol's bars.

Three views of the state a symbol is in at the close of bar t, each from bars <= t only:

- volatility regime: the w-bar volatility of log returns ranked within its own trailing
  `VOL_HISTORY` values (`regime_vol_pct_{w}`, 0 = calmest of the last year, 1 = wildest) and the
  same percentile cut into terciles (`regime_vol_state_{w}`: -1 low, 0 normal, +1 high);
- trend: the soft bull probability `regime_bull_{w}` (registered with the "ta" set in ta.py and
  joined to this set below): the logistic of the t-statistic of the mean log return over w bars,
  z = mean / (std / sqrt(w)); the bear probability is 1 - it, so it is not a second column;
- a two-state Gaussian hidden Markov model on log returns (`regime_hmm_p_high`): its FILTERED
  probability of the high-volatility state, P(state_t = high | r_1..r_t). This one is *fitted*:
  its parameters are estimated on the training rows only, so it cannot live in the feature store
  (which is built once per dataset, before any split). The store holds its observation, the
  one-bar log return, under the feature's name; the fitted pipeline (pipeline/regime.py) fits
  the model where it fits the scalers and replaces the column by the filtered probabilities,
  run over each symbol's whole history, in training, every fold, bundles and serving alike.

Each family is a few of the compiled panel kernels (features/panel.py: trailing std, trailing
average rank); their polars definitions are the oracle in tests/feature_oracle/regime.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from quant_cli.features import ta  # noqa: F401 - registers regime_bull_{w}, which this set joins (any import order)
from quant_cli.features.core import log_return
from quant_cli.features.panel import Panel
from quant_cli.features.registry import REGISTRY, register

Array = np.ndarray
REGISTRY.define_set(
    "regime",
    "Causal market regimes: volatility percentile and terciles, soft bull probability of the "
    "trend z-score, and a two-state Gaussian HMM's filtered high-volatility probability.",
)
_SET = ("regime",)
VOL_HISTORY = 252  # bars of trailing volatility a percentile is ranked in (a year of daily bars)
HMM_FEATURE = "regime_hmm_p_high"  # the fitted feature: the store holds its observation (log return)
_TREND = "regime_bull_{w}"
# The trend probability is a "ta" family already; it joins this set too (a family's sets are fixed
# at registration, so the registered object is replaced by a copy with one more set, in place).
_trend = REGISTRY.families[_TREND]
REGISTRY.families[_TREND] = dataclasses.replace(_trend, sets=(*_trend.sets, "regime"))


def vol_percentile(p: Panel, w: int, history: int = VOL_HISTORY) -> Array:
    """Rank of the w-bar volatility among its last `history` values (itself included), in [0, 1]."""
    vol = p.memo(("regime_vol", w), lambda: p.std(log_return(p), w))
    return (p.rank(vol, history) - 1.0) / (history - 1.0)


@register(
    "regime_vol_pct_{w}",
    inputs=("close",),
    tags=("regime", "volatility"),
    sets=_SET,
    min_window=2,
    kernel=True,
    description=f"Percentile (0-1) of the w-bar volatility of log returns among its last {VOL_HISTORY} values.",
)
def regime_vol_pct(p: Panel, w: int) -> Array:
    return vol_percentile(p, w)


@register(
    "regime_vol_state_{w}",
    inputs=("close",),
    tags=("regime", "volatility"),
    sets=_SET,
    min_window=2,
    kernel=True,
    description="Volatility regime: -1 low (percentile < 1/3), 0 normal, +1 high (> 2/3) of regime_vol_pct_{w}.",
)
def regime_vol_state(p: Panel, w: int) -> Array:
    pct = vol_percentile(p, w)
    state = np.where(pct < 1.0 / 3.0, -1.0, np.where(pct > 2.0 / 3.0, 1.0, 0.0))
    return np.where(np.isnan(pct), np.nan, state)


@register(
    HMM_FEATURE,
    inputs=("close",),
    tags=("regime", "volatility", "fitted"),
    sets=_SET,
    kernel=True,
    description="Filtered probability of the high-volatility state of a two-state Gaussian HMM on log returns, "
    "fit on training rows only (the feature table holds the log return; the pipeline filters it).",
)
def regime_hmm_observation(p: Panel) -> Array:
    return log_return(p)
