"""What the build-time causality check of factor plugins costs (features/plugin_check.py).

Two clean plugin factors (a 20-bar moving-average gap and a 20-bar volume z-score) are checked on
3 synthetic symbols — the check uses the 3 longest histories of a dataset whatever its size — of
BARS bars each: computed once as they are and once per cutoff with the later bars rewritten.

    PYTHONPATH=. python benchmarks/plugin_check.py [BARS ...]      # default: 1500 5000
"""

from __future__ import annotations

import sys
import time

from quant_cli.data.synthetic import generate
from quant_cli.features import REGISTRY, plugin_check, plugins

SOURCE = """
from quant_cli import factor


@factor(window=20)
def ma20_gap(bars):
    return bars["close"].rolling_mean(20) / bars["close"] - 1


@factor(window=20, inputs=("close", "volume"))
def vol_z20(bars):
    v = bars["volume"]
    return (v - v.rolling_mean(20)) / v.rolling_std(20)
"""


def main(sizes: list[int]) -> None:
    features = [REGISTRY.feature(n) for n in plugins.activate([plugins.PluginSource("factors.py", SOURCE)])]
    plugin_check.check_causal(features, generate(symbols=1, bars=100, seed=0))  # warm-up: imports, kernels
    for bars in sizes:
        panel = generate(symbols=plugin_check.SYMBOLS, bars=bars, seed=1)
        started = time.perf_counter()
        plugin_check.check_causal(features, panel)
        print(
            f"{plugin_check.SYMBOLS} symbols x {bars} bars, {len(features)} factors, "
            f"{len(plugin_check.cutoffs(bars))} cutoffs per symbol: {time.perf_counter() - started:.2f} s"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1500, 5000])
