"""What a factor plugin file imports: `from quant_cli import factor` (docs/factors.md).

Kept free of heavy imports: a plugin file is executed when a recipe names it, and importing this
must not load polars, numba or the feature engine first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__qfactory_factor__"
DEFAULT_INPUTS = ("close",)


@dataclass(frozen=True)
class FactorSpec:
    """What `@factor` declares: the bars of history a value reads (its lookback, counting the
    current bar) and the bar columns the function reads (a served request must carry them)."""

    window: int = 1
    inputs: tuple[str, ...] = DEFAULT_INPUTS


def factor(window: int = 1, inputs: Sequence[str] = DEFAULT_INPUTS) -> Callable[[F], F]:
    """Declare a plugin factor's lookback and input columns; the function itself is unchanged.

    @factor(window=20, inputs=("close", "volume"))
    def vol_ma20(bars):
        return bars["volume"].rolling_mean(20) / bars["volume"]
    """
    spec = FactorSpec(window, tuple(inputs) if not isinstance(inputs, str) else (inputs,))

    def mark(fn: F) -> F:
        setattr(fn, ATTRIBUTE, spec)
        return fn

    return mark
