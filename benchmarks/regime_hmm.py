"""The regime HMM (pipeline/regime.py) at panel scale: Baum-Welch fit and forward filter (not a test).

Planted two-state returns (1% / 3% daily volatility, 2% switching per bar) for every symbol;
prints the fit time, the EM iterations' parameters, the filter time and how often the filtered
state (> 0.5) matches the planted one — against the smoothed (forward-backward) probabilities,
which see the future and so score higher, which is why they are never a feature.

    python benchmarks/regime_hmm.py [--symbols 300] [--bars 3400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from quant_cli.pipeline.regime import filtered, fit_hmm, smoothed


def planted(symbols: int, bars: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    states = [np.cumsum(rng.random(bars) < 0.02) % 2 for _ in range(symbols)]
    return [rng.normal(0.0, np.where(s == 1, 0.03, 0.01)) for s in states], states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--bars", type=int, default=3400)
    args = parser.parse_args()
    returns, states = planted(args.symbols, args.bars)
    started = time.perf_counter()
    model = fit_hmm(returns)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    probabilities = filtered(model, returns)
    filter_s = time.perf_counter() - started
    hit = np.mean([((p > 0.5) == s).mean() for p, s in zip(probabilities, states)])
    smooth_hit = np.mean([((p > 0.5) == s).mean() for p, s in zip(smoothed(model, returns), states)])
    print(f"{args.symbols} symbols x {args.bars} bars: fit {fit_s:.2f} s, filter {filter_s:.2f} s")
    volatility, stay = np.sqrt(model.variances).round(4).tolist(), np.diag(model.transition).round(4).tolist()
    print(f"volatilities {volatility}, stay {stay}")
    print(f"state recovered: filtered {hit:.3f}, smoothed (uses the future) {smooth_hit:.3f}")


if __name__ == "__main__":
    main()
