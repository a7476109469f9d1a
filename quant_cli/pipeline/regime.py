"""A two-state Gaussian hidden Markov model of one-bar log returns: the fitted regime feature.

Fit (`fit_hmm`): Baum-Welch (EM with scaled forward-backward) on the TRAINING rows' returns,
one sequence per symbol, one set of parameters for every symbol (a market-wide notion of calm
and turbulent). States are ordered by variance after the fit: state 1 is the high-volatility one.

Features (`filtered`): P(state_t = high | r_1..r_t), the forward algorithm alone, started from
the chain's stationary distribution at each symbol's first bar. Smoothed probabilities
(`smoothed`, forward-backward) condition on returns AFTER t; they are used inside EM (on
training rows, to estimate the parameters) and by the tests that prove the features do not use
them, never as a feature.

Sequences are padded into one time-major (bars, symbols) array and the recursions run bar by bar
with numpy over all symbols at once: a Python loop over time (thousands of steps, each on one
contiguous (symbols, 2) slice), never over rows. A missing return (a symbol's first bar) carries
no evidence: both states' likelihood is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quant_cli.errors import DataError

_ITERATIONS = 50
_TOLERANCE = 1e-6  # stop EM when no parameter moves more than this (in units of the return std; probabilities)
_STAY = 0.95  # initial probability of staying in a state
_MIN_VARIANCE = 1e-12


@dataclass(frozen=True)
class GaussianHMM:
    means: np.ndarray  # (2,) mean log return per state
    variances: np.ndarray  # (2,) variance per state; variances[1] >= variances[0]
    transition: np.ndarray  # (2, 2) P(state_t+1 = j | state_t = i)

    @property
    def start(self) -> np.ndarray:
        """The stationary distribution: where a symbol's filter starts, whatever bar its history starts on."""
        a, b = self.transition[0, 1], self.transition[1, 0]
        total = a + b
        return np.array([0.5, 0.5]) if total <= 0 else np.array([b / total, a / total])

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "gaussian_hmm",
            "states": 2,
            "means": self.means.tolist(),
            "variances": self.variances.tolist(),
            "transition": self.transition.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GaussianHMM:
        return cls(
            np.asarray(data["means"], float),
            np.asarray(data["variances"], float),
            np.asarray(data["transition"], float),
        )


def padded(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """((T, S) float64 returns, NaN where missing or past a sequence's end; (T, S) bool: inside a sequence)."""
    length = max((len(s) for s in sequences), default=0)
    x = np.full((length, len(sequences)), np.nan)
    inside = np.zeros((length, len(sequences)), dtype=bool)
    for i, s in enumerate(sequences):
        x[: len(s), i] = s
        inside[: len(s), i] = True
    return x, inside


def _likelihoods(model: GaussianHMM, x: np.ndarray) -> np.ndarray:
    """(T, S, 2) emission likelihoods, each (t, s) divided by its larger one (the ratio is what
    filtering needs; the common factor cancels in every normalisation); 1 where x is missing.
    From the log-likelihood ratio d = log N(x; high) - log N(x; low): (exp(min(-d, 0)), exp(min(d, 0)))."""
    (m0, m1), (v0, v1) = model.means, model.variances
    d = 0.5 * ((x - m0) ** 2 / v0 - (x - m1) ** 2 / v1 + np.log(v0 / v1))
    d = np.nan_to_num(d, nan=0.0)  # missing: no evidence either way
    return np.stack([np.exp(np.minimum(-d, 0.0)), np.exp(np.minimum(d, 0.0))], axis=-1)


def _forward(model: GaussianHMM, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (T, S, 2): P(state_t | x_1..x_t), scale (T, S): P(x_t | x_1..x_t-1) up to each (t, s)'s factor)."""
    T, S, _ = e.shape
    alpha = np.empty((T, S, 2))
    scale = np.empty((T, S))
    predicted = np.broadcast_to(model.start, (S, 2))
    for t in range(T):
        joint = predicted * e[t]
        scale[t] = joint.sum(axis=1)
        alpha[t] = joint / scale[t, :, None]
        predicted = alpha[t] @ model.transition  # P(state_t+1 | x_1..x_t)
    return alpha, scale


def _backward(model: GaussianHMM, e: np.ndarray, scale: np.ndarray) -> np.ndarray:
    T = e.shape[0]
    beta = np.ones(e.shape)
    for t in range(T - 2, -1, -1):
        beta[t] = (e[t + 1] * beta[t + 1]) @ model.transition.T / scale[t + 1, :, None]
    return beta


def filtered(model: GaussianHMM, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """P(high | returns up to t) for every bar of every sequence: the feature."""
    x, _ = padded(sequences)
    alpha, _ = _forward(model, _likelihoods(model, x))
    return [alpha[: len(s), i, 1] for i, s in enumerate(sequences)]


def smoothed(model: GaussianHMM, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """P(high | the WHOLE sequence) (forward-backward): uses the future; for EM and tests only."""
    x, inside = padded(sequences)
    gamma, _ = _posteriors(model, x, inside)
    return [gamma[: len(s), i, 1] for i, s in enumerate(sequences)]


def _posteriors(model: GaussianHMM, x: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gamma (T, S, 2), expected transition counts (2, 2)) over the sequences' own bars."""
    e = _likelihoods(model, x)
    alpha, scale = _forward(model, e)
    beta = _backward(model, e, scale)
    gamma = alpha * beta
    gamma /= gamma.sum(axis=-1, keepdims=True)
    # xi_t(i, j) = alpha_t(i) A_ij e_t+1(j) beta_t+1(j) / scale_t+1, counted where t+1 is inside its sequence
    ahead = np.where(inside[1:, :, None], e[1:] * beta[1:] / scale[1:, :, None], 0.0)  # (T-1, S, 2)
    counts = np.einsum("tsi,tsj->ij", alpha[:-1], ahead) * model.transition  # sum of xi without (T, S, 2, 2)
    return gamma, counts


def fit_hmm(sequences: list[np.ndarray], iterations: int = _ITERATIONS) -> GaussianHMM:
    """Baum-Welch on `sequences` (one symbol's training returns each, in time order)."""
    x, inside = padded(sequences)
    observed = inside & np.isfinite(x)
    values = x[observed]
    if values.size < 3 or float(values.var()) <= 0:
        raise DataError(
            f"the regime model (regime_hmm_p_high) needs varying training returns, got {values.size} "
            "value(s); "
            "use more training data or drop the feature"
        )
    var = float(values.var())
    model = GaussianHMM(
        np.full(2, values.mean()), np.array([0.5 * var, 2.0 * var]), np.array([[_STAY, 1 - _STAY], [1 - _STAY, _STAY]])
    )
    for _ in range(iterations):
        updated = _em_step(model, x, inside, observed, floor=max(_MIN_VARIANCE, 1e-6 * var))
        moved = max(
            _relative(updated.means, model.means, var**0.5),
            _relative(updated.variances, model.variances, var),
            _relative(updated.transition, model.transition, 1.0),
        )
        model = updated
        if moved < _TOLERANCE:
            break
    return _ordered(model)


def _em_step(model: GaussianHMM, x: np.ndarray, inside: np.ndarray, observed: np.ndarray, floor: float) -> GaussianHMM:
    gamma, counts = _posteriors(model, x, inside)
    filled = np.where(observed, x, 0.0)  # (T, S); missing returns carry no evidence (weight 0)
    means, variances = np.empty(2), np.empty(2)
    for k in range(2):
        weight = np.where(observed, gamma[..., k], 0.0)
        total = weight.sum()
        means[k] = (weight * filled).sum() / total
        variances[k] = max((weight * (filled - means[k]) ** 2).sum() / total, floor)
    rows = counts.sum(axis=1, keepdims=True)
    transition = np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), model.transition)
    return GaussianHMM(means, variances, transition)


def _relative(new: np.ndarray, old: np.ndarray, unit: float) -> float:
    return float(np.max(np.abs(new - old))) / unit


def _ordered(model: GaussianHMM) -> GaussianHMM:
    """State 1 is the high-variance state (EM's labels are arbitrary)."""
    if model.variances[1] >= model.variances[0]:
        return model
    swap = [1, 0]
    return GaussianHMM(model.means[swap], model.variances[swap], model.transition[np.ix_(swap, swap)])
