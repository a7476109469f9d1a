"""Declared model parameters: each value's type (from its default) and allowed range.

A model declares `defaults` (name → default value) and, for values with limits, `limits`
(name → `Limit`). `check_params` refuses a value of the wrong type or outside its limits when the
model is constructed — before any features are computed — with one line naming the key, what is
allowed and what was received, e.g.

    model.params.num_leaves: expected an integer >= 2 for model 'lightgbm', got 'abc'

Types: an int default takes integers only (1.5 is refused, not truncated); a float default takes
any real number, ints included, and stores it as a float; booleans are never numbers. Lists and
tables (e.g. `hidden`, ensemble `members`) are checked by the model itself.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from quant_cli.errors import ModelError, one_of, shown

# Native libraries (LightGBM, XGBoost, CatBoost) take integer parameters as C ints: a larger
# value wraps around and the library aborts with its own '[Fatal]' line. Refuse it here.
INT_PARAM_MAX = 2**31 - 1

_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


@dataclass(frozen=True)
class Limit:
    """What a parameter accepts besides its type; every field is optional."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # exclude `low` itself (learning_rate > 0)
    high_open: bool = False
    special: tuple[Any, ...] = ()  # numbers allowed outside the range, e.g. -1
    choices: tuple[str, ...] = ()  # strings allowed (the only values for a str parameter)
    note: str = ""  # what the special values mean, e.g. "-1: no limit"
    kind: str | None = None  # overrides the kind inferred from the default


def at_least(low: float, **kw: Any) -> Limit:
    return Limit(low=low, **kw)


def above(low: float, **kw: Any) -> Limit:
    return Limit(low=low, low_open=True, **kw)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False, **kw: Any) -> Limit:
    return Limit(low=low, high=high, low_open=low_open, high_open=high_open, **kw)


def fraction(**kw: Any) -> Limit:
    """A share in (0, 1]: subsample, colsample, feature_fraction, max_samples."""
    return between(0, 1, low_open=True, **kw)


def choice(*values: str) -> Limit:
    return Limit(choices=values)


def kind_of(default: Any) -> str:
    """'bool', 'int', 'float', 'str', 'list' or 'table', from a declared default."""
    for kind, types in (
        ("bool", bool),
        ("int", int),
        ("float", float),
        ("str", str),
        ("list", (list, tuple)),
        ("table", dict),
    ):
        if isinstance(default, types):
            return kind
    return "any"


def describe(default: Any, limit: Limit | None) -> str:
    """What a parameter accepts, in words: 'an integer >= 2', 'one of 'rbf', 'linear''."""
    limit = limit or Limit()
    kind = limit.kind or kind_of(default)
    if kind == "str" and limit.choices:
        text = f"one of {one_of(limit.choices)}"
    else:
        text = f"{_KIND_WORDS.get(kind, f'a {kind}')} {_range(limit)}".rstrip()
        extra = [*(repr(s) for s in limit.special), *(repr(c) for c in limit.choices)]
        if extra:
            text += f" or {' or '.join(extra)}"
    return f"{text} ({limit.note})" if limit.note else text


def _range(limit: Limit) -> str:
    low, high = _num(limit.low), _num(limit.high)
    if limit.low is not None and limit.high is not None:
        return f"in {'(' if limit.low_open else '['}{low}, {high}{')' if limit.high_open else ']'}"
    if limit.low is not None:
        return f"{'>' if limit.low_open else '>='} {low}"
    if limit.high is not None:
        return f"{'<' if limit.high_open else '<='} {high}"
    return ""


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def check_params(
    model: str, params: dict[str, Any], defaults: dict[str, Any], limits: dict[str, Limit]
) -> dict[str, Any]:
    """`params` with every declared scalar checked (and floats stored as float); raises ModelError."""
    return {key: check_value(model, key, value, defaults.get(key), limits.get(key)) for key, value in params.items()}


def check_value(model: str, key: str, value: Any, default: Any, limit: Limit | None) -> Any:
    limit = limit or Limit()
    kind = limit.kind or kind_of(default)
    if kind in ("list", "table", "any"):
        return value  # structured values: the model checks them itself
    if isinstance(value, str) and value in limit.choices:
        return value
    if kind == "int" and _is_kind(value, kind) and abs(value) > INT_PARAM_MAX:
        raise ModelError(
            f"model.params.{key}: expected {describe(default, limit)} and at most {INT_PARAM_MAX} "
            f"for model '{model}', got {shown(value)}"
        )
    if _is_special(value, limit) or (_is_kind(value, kind) and _in_range(value, kind, limit)):
        return float(value) if kind == "float" else int(value) if kind == "int" else value
    raise ModelError(f"model.params.{key}: expected {describe(default, limit)} for model '{model}', got {shown(value)}")


def _is_special(value: Any, limit: Limit) -> bool:
    return not isinstance(value, (bool, str)) and any(value == s for s in limit.special)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is not the number 1 here
    if kind == "int":
        return isinstance(value, numbers.Integral)
    if kind == "float":
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, str)


def _in_range(value: Any, kind: str, limit: Limit) -> bool:
    if kind == "str":
        return not limit.choices  # with choices, only those strings (handled before) are allowed
    if kind not in ("int", "float"):
        return True
    if limit.low is not None and (value < limit.low or (limit.low_open and value == limit.low)):
        return False
    return not (limit.high is not None and (value > limit.high or (limit.high_open and value == limit.high)))


_LOCATION = re.compile(r"^(\[[\d:]+\]\s*)?([\w./\\-]+\.(cc|cpp|h|hpp):\d+:\s*)?")


def library_message(exc: BaseException) -> str:
    """The first line of a library's error, without its timestamp and source-file prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return _LOCATION.sub("", first, count=1) or first
