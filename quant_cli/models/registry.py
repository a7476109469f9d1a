"""Model names → classes. Config picks models by registered name, never by import path."""

from __future__ import annotations

from typing import Any

from quant_cli.errors import ModelError, one_of, suggest
from quant_cli.models.base import Model
from quant_cli.models.boosting import LightGBMModel

MODELS: dict[str, type[Model]] = {cls.name: cls for cls in (LightGBMModel,)}


def model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise ModelError(f"model.name {name!r} is not a registered model{suggest(name, MODELS)}; allowed: {one_of(MODELS)}")
    return MODELS[name]


def create_model(name: str, task: str, params: dict[str, Any], seed: int, threads: int) -> Model:
    return model_class(name)(task=task, seed=seed, threads=threads, **params)


def describe_models() -> list[dict[str, Any]]:
    return [
        {"name": cls.name, "family": cls.family, "tasks": list(cls.tasks), "tabular": cls.tabular,
         "sequence": cls.sequence, "sample_weights": cls.sample_weights, "gpu": cls.gpu}
        for cls in MODELS.values()
    ]
