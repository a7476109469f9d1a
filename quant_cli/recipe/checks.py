"""Checks across recipe keys, run when the recipe loads — before any feature is built.

Each key is already valid on its own (the schema); these catch combinations that cannot work.
Dates outside the data are checked by the split stage, which knows the data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from quant_cli.errors import RecipeError


def check_recipe(recipe: dict[str, Any], origin: str) -> None:
    _check_features(recipe["features"], origin)
    _check_split(recipe["split"], origin)


def _check_features(cfg: dict[str, Any], origin: str) -> None:
    if not cfg["sets"] and not cfg["include"]:
        raise RecipeError(f"{origin}: features.sets is empty and features.include names nothing, so there are no features; "
                          "list at least one set, e.g. sets = [\"core\"] (`qfactory features ls-specs`)")


def _check_split(cfg: dict[str, Any], origin: str) -> None:
    val_start, test_start = cfg["val_start"], cfg["test_start"]
    if bool(val_start) != bool(test_start):
        given, missing = ("split.val_start", "split.test_start") if val_start else ("split.test_start", "split.val_start")
        raise RecipeError(f"{origin}: {given} is set but {missing} is not; set both (explicit boundaries) "
                          "or neither (the split.train / split.val fractions)")
    if val_start and _time(val_start) > _time(test_start):
        raise RecipeError(f"{origin}: split.val_start ({val_start}) is after split.test_start ({test_start}); "
                          "the validation segment must start first")
    if not val_start and cfg["train"] + cfg["val"] >= 1:
        raise RecipeError(f"{origin}: split.train ({cfg['train']:g}) + split.val ({cfg['val']:g}) = {cfg['train'] + cfg['val']:g} "
                          "leaves no test segment; make them sum to less than 1")


def _time(text: str) -> dt.datetime:
    """Comparable instants: naive values are UTC (as the split stage reads them)."""
    parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
