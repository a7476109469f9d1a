"""Feature engine: registry of causal feature families, computation, and a versioned store.

Importing this package registers every family (modules imported below); a new family module
only needs an import line here to join the registry, the catalogue and the causality tests.
"""

from quant_cli.features.registry import ALL_SET, FEATURE_CODE_VERSION, REGISTRY, Family, Feature, Selection, register
from quant_cli.features import core  # noqa: F401,E402 - registers the "core" set
from quant_cli.features.engine import compute_features  # noqa: E402

__all__ = [
    "ALL_SET", "FEATURE_CODE_VERSION", "REGISTRY", "Family", "Feature", "Selection",
    "compute_features", "register",
]
