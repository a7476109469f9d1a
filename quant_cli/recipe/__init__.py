"""Recipes: the TOML schema (`schema`), loading with `extends` and `--set` (`load`)."""

from quant_cli.recipe.load import (
    Recipe, deep_merge, defaults, defaults_toml, fingerprint, load_recipe, to_toml, with_defaults,
)

__all__ = ["Recipe", "deep_merge", "defaults", "defaults_toml", "fingerprint", "load_recipe", "to_toml", "with_defaults"]
