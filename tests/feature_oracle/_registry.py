"""Collects the oracle's polars builders by family pattern, the way the production registry did."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from quant_cli.features.registry import REGISTRY as _PRODUCTION

BUILDERS: dict[str, Callable[..., pl.Expr]] = {}
DERIVED: dict[str, tuple[str, ...]] = {}


class _Registry:
    def define_set(self, name: str, description: str) -> None:
        """Sets belong to the production registry; the oracle only supplies expressions."""

    def derive(self, name: str, expr: pl.Expr) -> None:
        # The engine computes a polars family's helper columns from the production registry's table
        # of derived expressions; the oracle's names (_high_key, ...) are used by no kernel family.
        _PRODUCTION.derived[name] = expr


REGISTRY = _Registry()


def register(pattern: str, *, params: dict[str, Any] | None = None, derived: Sequence[str] = (), **_: Any):
    key = pattern.format(**(params or {}), w="{w}", tf="{tf}", feature="{feature}")

    def decorate(fn: Callable[..., pl.Expr]) -> Callable[..., pl.Expr]:
        BUILDERS[key] = fn
        DERIVED[key] = tuple(derived)
        return fn

    return decorate
