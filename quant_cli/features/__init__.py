"""Feature engine: registry of causal feature families, computation, and a versioned store.

Importing this package registers every family (modules imported below, in catalogue order); a
new family module only needs an import line here to join the registry, the catalogue and the
causality tests.
"""

# The import order below is the catalogue order (registration order decides canonical column
# order), so the import sorter leaves this block alone.
# isort: off
from quant_cli.features.registry import ALL_SET, FEATURE_CODE_VERSION, REGISTRY, Family, Feature, Selection, register
from quant_cli.features import core  # noqa: F401,E402 - registers the "core" set
from quant_cli.features import alpha158  # noqa: F401,E402 - the "alpha158" set
from quant_cli.features import ta  # noqa: F401,E402 - the rest of the "ta" set
from quant_cli.features import cross_asset  # noqa: F401,E402 - the "cross_asset" set
from quant_cli.features import mtf  # noqa: F401,E402 - the "mtf" set
from quant_cli.features import regime  # noqa: F401,E402 - the "regime" set
from quant_cli.features import references  # noqa: F401,E402 - [features.references] features
from quant_cli.features import expression_eval  # noqa: F401,E402 - [features.expressions] features
from quant_cli.features.align import FeatureOptions  # noqa: E402
from quant_cli.features.engine import compute_features  # noqa: E402
# isort: on

__all__ = [
    "ALL_SET",
    "FEATURE_CODE_VERSION",
    "REGISTRY",
    "Family",
    "Feature",
    "FeatureOptions",
    "Selection",
    "compute_features",
    "register",
]
