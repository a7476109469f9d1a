"""The oracle: the polars expressions every feature family was defined by before the compiled
kernels (quant_cli/features/kernels.py), kept verbatim in this package.

`oracle(feature)` is the same feature (name, window, timeframe, sources, options) with its family's
kernel implementation replaced by the old polars expression, so the production engine computes it
through its polars path; tests/test_kernel_oracle.py compares the two for every registered feature.
Cross-sectional (stage-2) families were and stay polars: they are their own oracle.
"""

from __future__ import annotations

import dataclasses

from feature_oracle import alpha158, core, cross_asset, mtf, regime, ta  # noqa: F401 - fill BUILDERS
from feature_oracle._registry import BUILDERS, DERIVED
from quant_cli.features.registry import Feature


def oracle(feature: Feature) -> Feature:
    family = feature.family
    sources = tuple(oracle(s) for s in feature.sources)
    if family.kernel:
        family = dataclasses.replace(
            family, build=BUILDERS[family.pattern], compute=None, derived=DERIVED[family.pattern]
        )
    return Feature(family, feature.window, feature.timeframe, sources)
