"""Model names → classes. Config picks models by registered name, never by import path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quant_cli.errors import ModelError, one_of, suggest
from quant_cli.io import JSONLimitError, read_json
from quant_cli.models.base import Model
from quant_cli.report import SILENT, Reporter
from quant_cli.models.boosting import CatBoostModel, LightGBMModel, XGBoostModel
from quant_cli.models.classical import ExtraTreesModel, LinearModel, LogisticModel, RandomForestModel, SVMModel
from quant_cli.models.ensemble import BlendingModel, StackingModel, VotingModel
from quant_cli.models.neural import MLPModel
from quant_cli.models.sequence import GRUModel, LSTMModel, TCNModel, TransformerModel
from quant_cli.models.params import describe

MODELS: dict[str, type[Model]] = {cls.name: cls for cls in (
    LightGBMModel, CatBoostModel, XGBoostModel, RandomForestModel, ExtraTreesModel, LinearModel, LogisticModel,
    SVMModel, MLPModel, LSTMModel, GRUModel, TCNModel, TransformerModel, VotingModel, StackingModel, BlendingModel,
)}

FLAGS = ("tabular", "sequence", "sample_weights", "gpu", "early_stopping", "importance", "missing_values")


def model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise ModelError(f"model.name {name!r} is not a registered model{suggest(name, MODELS)}; allowed: {one_of(MODELS)}")
    return MODELS[name]


def create_model(name: str, task: str, params: dict[str, Any], seed: int, threads: int, *, device: str = "cpu",
                 symbol_encoding: str = "none", unseen_symbols: str = "error", reporter: Reporter = SILENT,
                 train: dict[str, Any] | None = None) -> Model:
    """A new, unfitted model; raises ModelError for an unknown name, parameter or option."""
    return model_class(name)(task=task, seed=seed, threads=threads, device=device, symbol_encoding=symbol_encoding,
                             unseen_symbols=unseen_symbols, reporter=reporter, train=train, **params)


def load_model(folder: Path) -> Model:
    """Load a saved model of any registered kind (its name is in model.json)."""
    meta_path = Path(folder) / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"no saved model at {folder} (model.json is missing)")
    try:  # model.json, coefficients.json, history.json: read back through the bounded JSON reader
        return model_class(read_json(meta_path)["name"]).load(Path(folder))
    except (json.JSONDecodeError, JSONLimitError, UnicodeDecodeError) as exc:
        raise ModelError(f"the saved model at {folder} is damaged (a JSON file is not valid: {exc}); "
                         "retrain it (`qfactory train --recipe R`)") from None


def describe_models() -> list[dict[str, Any]]:
    return [
        {"name": cls.name, "family": cls.family, "tasks": list(cls.tasks), **{flag: getattr(cls, flag) for flag in FLAGS},
         "symbol_encodings": list(cls.symbol_encodings), "params": sorted(cls.defaults), "parameters": _parameters(cls)}
        for cls in MODELS.values()
    ]


def _parameters(cls: type[Model]) -> dict[str, dict[str, Any]]:
    """name → {default, accepts}: what `--set model.params.NAME=VALUE` takes, in words."""
    return {key: {"default": default, "accepts": describe(default, cls.limits.get(key))} for key, default in cls.defaults.items()}
