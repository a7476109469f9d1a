"""Recipes: loading with `extends` and `--set` (`load`), cross-key checks (`checks`), and the command
line's changes, `--set` and `--model` (`overrides`). The TOML schema is `quant_cli.schema`, on the
ground floor, since data and models read it too."""

from quant_cli.recipe.load import (
    Recipe,
    deep_merge,
    defaults,
    defaults_toml,
    fingerprint,
    load_recipe,
    to_toml,
    with_defaults,
)
from quant_cli.recipe.overrides import load_with_overrides

__all__ = [
    "load_with_overrides",
    "Recipe",
    "deep_merge",
    "defaults",
    "defaults_toml",
    "fingerprint",
    "load_recipe",
    "to_toml",
    "with_defaults",
]
