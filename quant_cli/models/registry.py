"""Model names → classes. Config picks models by registered name, never by import path.

The registry imports no model: a model class registers itself by declaring `name`
(`Model.__init_subclass__`). Registration happens when the model's module is imported, which the
registry does once per process from plain lists inside the packages: `quant_cli.models.MODEL_MODULES`
(tabular families, ensembles) and every module of `quant_cli.models.torch` (one file per
architecture). The torch modules import torch, which takes seconds, so they are imported only when
a name is not found among the others or when every model is listed.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quant_cli.errors import ModelError, RecipeError, one_of, suggest
from quant_cli.io import JSONLimitError, read_json
from quant_cli.models.base import REGISTERED, Model
from quant_cli.models.params import describe
from quant_cli.report import SILENT, Reporter

# Shown by `train --list-models` and `describe_models`: what a model takes and how it trains.
FLAGS = (
    "tabular",
    "sequence",
    "bar_channels",
    "static_covariates",
    "known_future",
    "cross_section",
    "sample_weights",
    "gpu",
    "early_stopping",
    "importance",
    "missing_values",
)

_imported: set[str] = set()


def _import_models(torch: bool) -> None:
    """Import the model modules (once): the tabular ones, and with `torch` the torch architectures."""
    if "tabular" not in _imported:
        from quant_cli import models

        for module in models.MODEL_MODULES:
            importlib.import_module(f"quant_cli.models.{module}")
        _imported.add("tabular")
    if torch and "torch" not in _imported:
        from quant_cli.models import torch as package

        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            importlib.import_module(f"quant_cli.models.torch.{info.name}")
        _imported.add("torch")


def all_models() -> dict[str, type[Model]]:
    """Every registered model, by name, in a fixed order whatever was imported first: the modules of
    MODEL_MODULES in their order, then the torch architectures by file name, then any others; the
    models of one module in the order they are defined."""
    from quant_cli import models

    _import_models(torch=True)
    tabular = {f"quant_cli.models.{m}": i for i, m in enumerate(models.MODEL_MODULES)}

    def rank(cls: type[Model]) -> tuple[int, int, str]:
        module = cls.__module__
        if module in tabular:
            return 0, tabular[module], ""
        return (1, 0, module) if module.startswith("quant_cli.models.torch.") else (2, 0, module)

    return dict(sorted(REGISTERED.items(), key=lambda item: rank(item[1])))  # stable: definition order kept


def torch_models() -> dict[str, type[Model]]:
    """The registered torch models (the model-zoo harness runs each), by name."""
    from quant_cli.models.torchmodel import TorchModel

    return {name: cls for name, cls in all_models().items() if issubclass(cls, TorchModel)}


def model_class(name: str) -> type[Model]:
    _import_models(torch=False)
    if name not in REGISTERED:
        _import_models(torch=True)
    if name not in REGISTERED:
        known = all_models()
        raise ModelError(
            f"model.name {name!r} is not a registered model{suggest(name, known)}; allowed: {one_of(known)}"
        )
    return REGISTERED[name]


def create_model(
    name: str,
    task: str,
    params: dict[str, Any],
    seed: int,
    threads: int,
    *,
    device: str = "cpu",
    symbol_encoding: str = "none",
    unseen_symbols: str = "error",
    reporter: Reporter = SILENT,
    train: dict[str, Any] | None = None,
    static_columns: list[str] | None = None,
    known_future: list[str] | None = None,
) -> Model:
    """A new, unfitted model; raises ModelError for an unknown name, parameter or option."""
    return model_class(name)(
        task=task,
        seed=seed,
        threads=threads,
        device=device,
        symbol_encoding=symbol_encoding,
        unseen_symbols=unseen_symbols,
        reporter=reporter,
        train=train,
        **({"static_columns": static_columns} if static_columns else {}),
        **({"known_future": known_future} if known_future else {}),
        **params,
    )


def load_model(folder: Path) -> Model:
    """Load a saved model of any registered kind (its name is in model.json)."""
    meta_path = Path(folder) / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"no saved model at {folder} (model.json is missing)")
    try:  # model.json, coefficients.json, history.json: read back through the bounded JSON reader
        return model_class(read_json(meta_path)["name"]).load(Path(folder))
    except (json.JSONDecodeError, JSONLimitError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"the saved model at {folder} is damaged (a JSON file is not valid: {exc}); "
            "retrain it (`qfactory train --recipe R`)"
        ) from None


def describe_models() -> list[dict[str, Any]]:
    return [
        {
            "name": cls.name,
            "family": cls.family,
            "tasks": list(cls.tasks),
            "output": cls.output,
            **{flag: getattr(cls, flag) for flag in FLAGS},
            "symbol_encodings": list(cls.symbol_encodings),
            "params": sorted(cls.defaults),
            "parameters": _parameters(cls),
        }
        for cls in all_models().values()
    ]


def _parameters(cls: type[Model]) -> dict[str, dict[str, Any]]:
    """name → {default, accepts, doc}: what `--set model.params.NAME=VALUE` takes, in words."""
    return {
        key: {"default": default, "accepts": describe(default, cls.limits.get(key)), "doc": cls.docs.get(key, "")}
        for key, default in cls.defaults.items()
    }


def params_toml() -> str:
    """Every model's parameters as commented TOML (`qfactory recipe defaults` appends it)."""
    import json

    lines = ["", "# ---- model.params of each registered model (`qfactory train --list-models` lists them too) ----"]
    for row in describe_models():
        lines.append(f'# model.name = "{row["name"]}":')
        for key, p in row["parameters"].items():
            doc = f"{p['doc']}; " if p["doc"] else ""
            lines.append(f"#   {key} = {json.dumps(p['default'])}  # {doc}{p['accepts']}")
    return "\n".join(lines) + "\n"


# ---- a recipe's model against the model's capability flags (run when the recipe loads) ------------


def check_capabilities(recipe: dict[str, Any], origin: str) -> None:
    """Refuse, in one line naming the model and the flag, a recipe whose [model] section asks the model
    for an input or a task it does not declare. Run when a recipe to train is loaded (the CLI passes it
    to quant_cli.recipe.load_recipe as its `check`) and again by the stages before any work."""
    model = recipe["model"]
    cls = model_class(model["name"])
    name, task, encoding, inputs = cls.name, model["task"], model["symbol_encoding"], model["params"].get("inputs")
    if task not in cls.tasks:
        _refuse(
            origin,
            name,
            f"does not do {task} (flag tasks = {one_of(cls.tasks)})",
            "model.task",
            task,
            lambda c: task in c.tasks,
        )
    if encoding not in cls.symbol_encodings:
        _refuse(
            origin,
            name,
            f"does not take the symbol encoding {encoding!r} (flag symbol_encodings = {one_of(cls.symbol_encodings)})",
            "model.symbol_encoding",
            encoding,
            lambda c: encoding in c.symbol_encodings,
        )
    if inputs in ("bars", "both") and not cls.bar_channels:
        _refuse(
            origin,
            name,
            "does not take raw-bar channels (flag bar_channels)",
            "model.params.inputs",
            inputs,
            lambda c: c.bar_channels,
        )
    if model["static_columns"] and not cls.static_covariates:
        _refuse(
            origin,
            name,
            "does not take static covariates (flag static_covariates)",
            "model.static_columns",
            model["static_columns"],
            lambda c: c.static_covariates,
        )
    if model["known_future"] and not cls.known_future:
        _refuse(
            origin,
            name,
            "does not take known-future covariates (flag known_future)",
            "model.known_future",
            model["known_future"],
            lambda c: c.known_future,
        )
    if cls.output == "path":
        _check_path_label(origin, name, recipe["label"])


def forecasts_path(recipe: dict[str, Any]) -> bool:
    """Whether the recipe's model forecasts a path: its run's rows then carry path targets."""
    return model_class(recipe["model"]["name"]).output == "path"


def _check_path_label(origin: str, name: str, label: dict[str, Any]) -> None:
    """A path model learns the h one-bar simple returns of a forward_return label (DESIGN.md §6)."""
    asked = [f"label.kind = {label['kind']!r}"] if label["kind"] != "forward_return" else []
    asked += [f"label.{k} = true" for k in ("log", "vol_scale") if label.get(k)]
    if label.get("cross_sectional", "none") != "none":
        asked.append(f"label.cross_sectional = {label['cross_sectional']!r}")
    if asked:
        raise RecipeError(
            f"{origin}: model '{name}' forecasts a path of one-bar returns (flag output = 'path'), "
            "which needs "
            f"label.kind = 'forward_return' with log, vol_scale and cross_sectional off, not "
            f"{', '.join(asked)}; change the [label] section or use a single-score model"
        )


def _refuse(origin: str, name: str, lacks: str, key: str, value: Any, has: Callable[[type[Model]], bool]) -> None:
    able = [n for n, c in all_models().items() if has(c)]
    if not able:
        fix = f"no registered model has it yet; remove {key}"
    else:
        which = one_of(able) if len(able) <= 6 else "`qfactory train --list-models` shows each model's flags"
        fix = f"use a model that has it ({which}) or change {key}"
    raise RecipeError(f"{origin}: model '{name}' {lacks}, which {key} = {value!r} asks for; {fix}")
