"""A recipe with the command line's changes: `--set` items and a model switch (`--model NAME`).

`--model NAME` and `--set model.name=NAME` are the same switch. The recipe's `model.params` were
written for its own model, so switching to another model drops them, with one notice, except
those given with `--set model.params.KEY=VALUE`.
"""

from __future__ import annotations

from pathlib import Path

from quant_cli.errors import clipped
from quant_cli.recipe.load import Recipe, RecipeCheck, load_recipe, parse_override_value
from quant_cli.report import SILENT, Reporter


def load_with_overrides(
    path: str | Path | None,
    sets: list[str] | None = None,
    model: str | None = None,
    reporter: Reporter = SILENT,
    check: RecipeCheck | None = None,
) -> Recipe:
    """`path` with `sets` applied, then `model` (`--model`, which wins over a --set model.name); `check`
    runs on the final recipe (load_recipe)."""
    sets = [*(sets or []), *([f'model.name="{model}"'] if model else [])]
    switch = (model, f"--model {clipped(model)}") if model else _switched_model(sets)
    if switch is None:
        return load_recipe(path, sets, check=check)
    name, label = switch
    written = load_recipe(path, [item for item in sets if not _sets_model_name(item)])["model"]  # before the switch
    if written["name"] == name or not written["params"]:
        return load_recipe(path, sets, check=check)
    explicit = [item for item in sets if param_key(item) is not None]
    keys = {param_key(item) for item in explicit}
    kept = set(written["params"]) if "" in keys else keys  # a whole --set model.params={...} table keeps all
    dropped = sorted(set(written["params"]) - kept)
    if dropped:
        reporter.notice(
            f"{label}: ignoring model.params written for {written['name']} ({', '.join(dropped)}); "
            "set them with --set model.params.KEY=VALUE"
        )
    return load_recipe(path, [*sets, "model.params={}", *explicit], check=check)


def _switched_model(sets: list[str]) -> tuple[str, str] | None:
    """(model name, how the user said it) of the last item that sets model.name, or None."""
    for item in reversed(sets):
        if _sets_model_name(item):
            value = parse_override_value(item.partition("=")[2].strip())
            if not isinstance(value, str):
                return None  # not a name: let the recipe validation name the error
            return value, f"--set {clipped(item)}"
    return None


def _sets_model_name(item: str) -> bool:
    return _key_parts(item) == ["model", "name"]


def param_key(item: str) -> str | None:
    """'num_leaves' for --set model.params.num_leaves=7, '' for the whole table, None otherwise."""
    parts = _key_parts(item)
    if parts[:2] != ["model", "params"]:
        return None
    return parts[2] if len(parts) > 2 else ""


def _key_parts(item: str) -> list[str]:
    return [p.strip() for p in item.partition("=")[0].strip().split(".")]
