"""Factor expressions evaluated on the compiled rolling kernels (features/kernels.py), as features.

Each expression becomes an ordinary per-symbol kernel `Feature` (a `Family` of its own, tag
"expression"), so the engine, the feature store, the pipeline, bundles and the causality harness
treat it like any built-in feature. Semantics, per operator, follow Qlib's (qlib/data/ops.py) with
this project's rules, documented in docs/expressions.md:
- rolling windows are full: a value needs N rows of the symbol and NaN (null) while fewer exist, or
  when any value in the window is missing (Qlib starts from a partial window, min_periods=1);
- arithmetic on a missing value is missing; x / 0 and Log(x <= 0) are null in the output;
- comparisons give 1.0 / 0.0 (missing where either side is); If's condition is true when non-zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from quant_cli.errors import RecipeError, suggest
from quant_cli.features import kernels as k
from quant_cli.features.expression import OPS, Expression, Node, parse, parse_section
from quant_cli.features.panel import Panel, gt
from quant_cli.features.registry import REGISTRY, Family, Feature, feature_lookback

Array = np.ndarray
TAG = "expression"


def _sxx(w: int) -> float:
    return w * (w * w - 1) / 12.0  # sum_j (j - mean j)^2 for j = 1..w


def _slope(x: Array, o: Array, w: int) -> Array:
    """Least-squares slope on time j = 1..w (oldest first): sum_j (j - mean j) x_j / Sxx."""
    weights = np.arange(1, w + 1, dtype=np.float64) - (w + 1) / 2.0
    return k.rolling_weighted_sum(x, o, weights) / _sxx(w)


def _rsquare(x: Array, o: Array, w: int) -> Array:
    # R^2 = slope^2 Sxx / Syy, Syy = (w - 1) var; a flat window is 0/0 (null)
    return _slope(x, o, w) ** 2 * _sxx(w) / ((w - 1) * k.rolling_var(x, o, w))


def _resi(x: Array, o: Array, w: int) -> Array:
    # the line through the window's mean point reaches mean + slope (w - 1) / 2 at the newest bar
    return x - k.rolling_mean(x, o, w) - _slope(x, o, w) * ((w - 1) / 2.0)


def _wma(x: Array, o: Array, w: int) -> Array:
    weights = np.arange(1, w + 1, dtype=np.float64)
    return k.rolling_weighted_sum(x, o, weights / weights.sum())


def _eq(a: Array, b: Array) -> Array:
    return np.where(np.isnan(a) | np.isnan(b), np.nan, (a == b).astype(np.float64))


def _if(c: Array, a: Array, b: Array) -> Array:
    return np.where(np.isnan(c), np.nan, np.where(c != 0.0, a, b))


# Rolling operators: fn(x, offsets, w) -> array, every one a compiled kernel (or a combination).
ROLLING: dict[str, Callable[[Array, Array, int], Array]] = {
    "Mean": k.rolling_mean,
    "Sum": k.rolling_sum,
    "Std": k.rolling_std,
    "Var": k.rolling_var,
    "Skew": k.rolling_skew,
    "Kurt": k.rolling_kurt,
    "Max": k.rolling_max,
    "Min": k.rolling_min,
    "Med": lambda x, o, w: k.rolling_quantile(x, o, w, 0.5),
    "Rank": lambda x, o, w: k.rolling_rank(x, o, w) / w,
    "IdxMax": k.rolling_argmax,
    "IdxMin": k.rolling_argmin,
    "Slope": _slope,
    "Rsquare": _rsquare,
    "Resi": _resi,
    "EMA": lambda x, o, w: k.ewm_adjusted(x, o, 2.0 / (w + 1.0), w),
    "WMA": _wma,
}
# The same kernels through the panel's shared passes (features/panel.py): on a raw column, Mean and
# Std of every feature of one window read one pass, as Max / IdxMax and Min / IdxMin do.
SHARED: dict[str, Callable[[Panel, Array, int], Array]] = {
    "Mean": Panel.mean,
    "Std": Panel.std,
    "Sum": Panel.sum,
    "Max": Panel.max,
    "Min": Panel.min,
    "IdxMax": Panel.argmax,
    "IdxMin": Panel.argmin,
}
OFFSET: dict[str, Callable[[Array, Array, int], Array]] = {
    "Ref": k.shift,
    "Delta": k.diff,
}
PAIR_ROLLING: dict[str, Callable[[Array, Array, Array, int], Array]] = {
    "Corr": k.rolling_corr,
    "Cov": k.rolling_cov,
}
ELEMENTWISE: dict[str, Callable[..., Array]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Neg": np.negative,
    "Abs": np.abs,
    "Log": np.log,
    "Sign": np.sign,
    "Power": np.power,
    "Greater": np.maximum,
    "Less": np.minimum,
    "Gt": gt,
    "Lt": lambda a, b: gt(b, a),
    "Ge": lambda a, b: 1.0 - gt(b, a),
    "Le": lambda a, b: 1.0 - gt(a, b),
    "Eq": _eq,
    "Ne": lambda a, b: 1.0 - _eq(a, b),
    "If": _if,
}


def evaluate(root: Node, p: Panel) -> Array:
    """The expression's values on a (symbol, ts)-sorted panel (NaN = missing), causally per symbol."""
    cache: dict[str, Array] = {}  # repeated sub-expressions are computed once

    def ev(node: Node) -> Array:
        key = str(node)
        if key not in cache:
            cache[key] = _node(node, p, ev)
        return cache[key]

    return _column(ev(root), p)


def _node(node: Node, p: Panel, ev: Callable[[Node], Array]) -> Array:
    """One node's values: an array over the panel's rows, or a 0-d array for a constant (numpy
    broadcasts it in arithmetic; a window or offset over a constant gets it as a full column)."""
    if node.kind == "num":
        return np.asarray(node.value, dtype=np.float64)
    if node.kind == "field":
        return p.col(node.name)
    name, args = node.name, node.args
    if name in SHARED and args[0].kind == "field":  # one pass per input column, shared across features
        return SHARED[name](p, p.col(args[0].name), int(args[1].value))
    if name in ROLLING:
        return ROLLING[name](_column(ev(args[0]), p), p.offsets, int(args[1].value))
    if name in OFFSET:
        return OFFSET[name](_column(ev(args[0]), p), p.offsets, int(args[1].value))
    if name == "Quantile":
        return k.rolling_quantile(_column(ev(args[0]), p), p.offsets, int(args[1].value), args[2].value)
    if name in PAIR_ROLLING:
        x, y = (_column(ev(a), p) for a in args[:2])
        return PAIR_ROLLING[name](x, y, p.offsets, int(args[2].value))
    return np.asarray(ELEMENTWISE[name](*(ev(a) for a in args)), dtype=np.float64)


def _column(values: Array, p: Panel) -> Array:
    """A contiguous float64 column over the panel's rows (what a kernel takes)."""
    return np.full(p.rows, float(values)) if values.ndim == 0 else np.ascontiguousarray(values)


@functools.lru_cache(maxsize=4096)
def expression_feature(name: str, text: str) -> Feature:
    """The feature computing `text` under `name` (cached: the same definition is the same object, so
    plans and the engine's caches hit; parse errors are not cached)."""
    return _feature(parse(name, text))


def _feature(expression: Expression) -> Feature:
    family = Family(
        pattern=expression.name,
        inputs=expression.fields,
        tags=(TAG,),
        description=expression.text,
        build=None,
        compute=functools.partial(evaluate, expression.root),  # picklable: plans travel to worker processes
        over="symbol",
    )
    return Feature(family, window=expression.lookback)  # window: the bars the definition reads


def expression_features(section: Mapping[str, Any]) -> list[Feature]:
    """The features of a `[features]` section's `expressions` table, sorted by name; a name that is
    also a built-in feature's is refused (the column would be ambiguous)."""
    parsed = parse_section(section.get("expressions") or {})
    for expression in parsed:
        if _builtin(expression.name):
            raise RecipeError(
                f"features.expressions.{expression.name}: the name is a built-in feature's; rename the expression "
                f"(e.g. {expression.name}_x)"
            )
    return [expression_feature(e.name, e.text) for e in parsed]


def _builtin(name: str) -> bool:
    try:
        REGISTRY.feature(name)
    except KeyError:
        return False
    return True


def is_expression(feature: Feature) -> bool:
    compute = feature.family.compute
    return isinstance(compute, functools.partial) and compute.func is evaluate


def definition(feature: Feature) -> str | None:
    """The expression text of an expression feature, else None."""
    return feature.family.description if is_expression(feature) else None


def features_for(names: Sequence[str], expressions: Mapping[str, str]) -> list[Feature]:
    """Registry features by name, with those named in `expressions` built from their text."""
    return [expression_feature(n, expressions[n]) if n in expressions else REGISTRY.feature(n) for n in names]


def explain(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """What `qfactory features --explain NAME` prints: an expression's text, parsed form, window and
    lookback, or a built-in feature's definition; RecipeError (with a close match) for an unknown name."""
    table = section.get("expressions") or {}
    if name in table:
        expression = parse(name, table[name])
        return {
            "name": name,
            "kind": "expression",
            "expression": expression.text,
            "parsed": str(expression.root),
            "inputs": list(expression.fields),
            "window": expression.window,
            "lookback": expression.lookback,
            "operators": [f"{op}: {OPS[op].doc}" for op in expression.root.operators],
        }
    try:
        feature = REGISTRY.feature(name)
    except KeyError:
        raise RecipeError(
            f"--explain: unknown feature {name!r}{suggest(name, [*table, *REGISTRY.families])}; give a built-in "
            "feature name (`qfactory features ls-specs`) or the name of an expression in --recipe's "
            "[features.expressions]"
        ) from None
    return {
        "name": feature.name,
        "kind": "built-in",
        "family": feature.family.pattern,
        "description": feature.family.description,
        "inputs": list(feature.inputs),
        "window": feature.window or 0,
        "lookback": feature_lookback(feature),  # the definitional one; a bundle measures the exact one
    }


REGISTRY.makers["expressions"] = lambda section, _windows: (expression_features(section), [])
