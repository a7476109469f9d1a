"""The search space of `[tune.space]`: dotted recipe keys → distributions, checked at load.

    [tune.space]
    "model.params.num_leaves" = { int = [15, 255], log = true }
    "model.params.learning_rate" = { float = [0.005, 0.1], log = true }
    "model.name" = { choice = ["lightgbm", "catboost"] }

Only keys that change the model or its fitting loop are searched (`model.name`, `model.task`...,
`model.params.*`, `train.*`): features and the split are computed once per study and shared by
every trial, so a key that would change them is refused with one line naming it. A
`model.params.KEY` must be a parameter of at least one candidate model; a trial whose model
lacks it simply does not sample it (a conditional space, as Optuna's define-by-run allows), and
switching `model.name` drops the base recipe's params written for the other model (`--model`'s
rule). Both bounds of every range are checked by constructing the model (or the recipe) with
them, so a bound the model refuses fails at load, not in trial 17.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from quant_cli.errors import QFactoryError, RecipeError, one_of, shown, suggest
from quant_cli.recipe import Recipe
from quant_cli.schema import SCHEMA, Key

_TUNABLE_SECTIONS = ("model", "train")
_KINDS = ("int", "float", "choice")


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted recipe path, e.g. model.params.num_leaves
    kind: str  # int, float or choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()

    @property
    def param(self) -> str | None:
        """'num_leaves' for model.params.num_leaves, else None."""
        parts = self.key.split(".")
        return parts[2] if parts[:2] == ["model", "params"] else None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        return trial.suggest_categorical(self.key, list(self.choices))

    def values_to_check(self) -> list[Any]:
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def parse_space(recipe: Recipe) -> list[Dimension]:
    """The validated dimensions, `model.name` first (others may depend on the model chosen)."""
    space = recipe["tune"]["space"]
    if not space:
        raise RecipeError(
            "tune.space is empty; add dimensions under [tune.space], e.g. "
            '"model.params.num_leaves" = { int = [15, 255] }'
        )
    dims = [_dimension(key, spec) for key, spec in space.items()]
    dims.sort(key=lambda d: d.key != "model.name")
    _check_against_recipe(recipe, dims)
    return dims


def _dimension(key: str, spec: Any) -> Dimension:
    where = f"tune.space {shown(key)}"
    _check_key(key, where)
    if not isinstance(spec, dict):
        raise RecipeError(
            f"{where}: expected a table such as {{ int = [1, 10] }}, {{ float = "
            f"[0.01, 0.1], log = true }} or {{ choice = [...] }}, got {shown(spec)}"
        )
    kinds = [k for k in _KINDS if k in spec]
    unknown = sorted(set(spec) - {*_KINDS, "log", "step"})
    if unknown:
        raise RecipeError(
            f"{where}: unknown field "
            f"{unknown[0]!r}{suggest(unknown[0], (*_KINDS, 'log', 'step'))}; allowed: "
            f"{one_of((*_KINDS, 'log', 'step'))}"
        )
    if len(kinds) != 1:
        raise RecipeError(f"{where}: give exactly one of {one_of(_KINDS)}, got {one_of(kinds) or 'none'}")
    kind, value = kinds[0], spec[kinds[0]]
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise RecipeError(f"{where}: choice must be a non-empty list, got {shown(value)}")
        return Dimension(key, kind, choices=tuple(value))
    return _range(key, where, kind, value, bool(spec.get("log", False)), spec.get("step"))


def _range(key: str, where: str, kind: str, value: Any, log: bool, step: Any) -> Dimension:
    number = int if kind == "int" else (int, float)
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    )
    if not ok or not all(math.isfinite(v) for v in value):
        noun = "integers" if kind == "int" else "numbers"
        raise RecipeError(f"{where}: {kind} must be [low, high] with two finite {noun}, got {shown(value)}")
    low, high = value
    if low > high:
        raise RecipeError(f"{where}: low {low} is above high {high}; write [low, high]")
    if log and low <= 0:
        raise RecipeError(f"{where}: log = true needs low > 0, got {low}")
    if log and step is not None:
        raise RecipeError(f"{where}: step and log = true cannot be combined; drop one")
    if kind == "float":
        low, high = float(low), float(high)
    return Dimension(key, kind, low, high, log, step)


def _check_key(key: str, where: str) -> None:
    parts = key.split(".")
    if parts[0] not in _TUNABLE_SECTIONS:
        raise RecipeError(
            f"{where}: only {', '.join(s + '.*' for s in _TUNABLE_SECTIONS)} keys can "
            "be tuned (features and the split are "
            "computed once and shared by every trial); tune other sections with separate studies"
        )
    node: Any = SCHEMA
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            allowed = list(node) if isinstance(node, dict) else []
            raise RecipeError(
                f"{where}: {'.'.join(parts[: depth + 1])!r} is not a recipe "
                f"key{suggest(part, allowed)}; see `qfactory recipe defaults`"
            )
        node = node[part]
        if isinstance(node, Key) and node.kind == "table":
            if len(parts) != depth + 2:
                raise RecipeError(f"{where}: name one parameter, e.g. '{'.'.join(parts[: depth + 1])}.num_leaves'")
            return
    if not isinstance(node, Key):
        raise RecipeError(f"{where}: {key!r} is a section, not a key; name a key inside it")


def _check_against_recipe(recipe: Recipe, dims: list[Dimension]) -> None:
    """Every model.params key belongs to some candidate model; every bound is accepted."""
    from quant_cli.models.registry import model_class

    names = next((list(d.choices) for d in dims if d.key == "model.name"), [recipe["model"]["name"]])
    for name in names:
        _refuse(f"tune.space 'model.name': choice {shown(name)}", lambda name=name: model_class(name))
    for dim in dims:
        if dim.param is not None and not any(dim.param in model_class(n).defaults for n in names):
            allowed = sorted({p for n in names for p in model_class(n).defaults})
            raise RecipeError(
                f"tune.space {dim.key!r}: {dim.param!r} is not a parameter of model "
                f"{one_of(names)}{suggest(dim.param, allowed)}; "
                "`qfactory train --list-models` lists each model's parameters"
            )
    for dim in dims:
        for value in dim.values_to_check():
            models = [n for n in names if dim.param is None or dim.param in model_class(n).defaults]
            for name in models:
                trial = (
                    apply(recipe, {"model.name": name, dim.key: value})
                    if dim.key != "model.name"
                    else apply(recipe, {dim.key: value})
                )
                _refuse(f"tune.space {dim.key!r}: value {shown(value)}", lambda r=trial: check_recipe_model(r))


def _refuse(where: str, check: Any) -> None:
    try:
        check()
    except QFactoryError as exc:
        raise RecipeError(f"{where} is refused: {exc}") from None


def check_recipe_model(recipe: Recipe) -> None:
    """The recipe's own validation, then the model's (names, types and limits of its parameters)."""
    from quant_cli.models.registry import create_model
    from quant_cli.recipe.load import _validate

    _validate({s: recipe[s] for s in _TUNABLE_SECTIONS}, SCHEMA, "the tuned recipe", prefix="")
    cfg = recipe["model"]
    create_model(
        cfg["name"],
        cfg["task"],
        cfg["params"],
        recipe["run"]["seed"],
        recipe["train"]["threads"],
        symbol_encoding=cfg["symbol_encoding"],
        unseen_symbols=cfg["unseen_symbols"],
        static_columns=cfg.get("static_columns"),
        known_future=cfg.get("known_future"),
    )


def apply(recipe: Recipe, values: dict[str, Any]) -> Recipe:
    """A copy of `recipe` with dotted `values` set. Switching model.name drops the params the base
    recipe wrote for its own model; a param the chosen model lacks is not set."""
    from quant_cli.models.registry import model_class

    out = copy.deepcopy(recipe)
    name = values.get("model.name", out["model"]["name"])
    if name != recipe["model"]["name"]:
        out["model"]["name"], out["model"]["params"] = name, {}
    for key, value in values.items():
        parts = key.split(".")
        if parts[:2] == ["model", "params"] and parts[2] not in model_class(name).defaults:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def sample(dims: list[Dimension], trial: Any, base_model: str) -> dict[str, Any]:
    """One trial's values (define-by-run: params only for the model this trial picked)."""
    from quant_cli.models.registry import model_class

    values: dict[str, Any] = {}
    for dim in dims:
        if dim.param is not None and dim.param not in model_class(values.get("model.name", base_model)).defaults:
            continue
        values[dim.key] = dim.suggest(trial)
    return values
