"""`qfactory train`: start a run from a recipe, or train a run that holds a split."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import (
    DeviceOpt, ModelOpt, OptionalRecipeOpt, Printed, SetOpt, Shared, StrictDeviceOpt, load_stage_recipe, stage_command,
)
from quant_cli.errors import QFactoryError
from quant_cli.models.registry import FLAGS, describe_models


RunToTrainOpt = Annotated[str | None, typer.Option("--run", help="Train this run (a path, run id or 'latest'); it must hold a split and no model.", show_default=False)]
ListModelsOpt = Annotated[bool, typer.Option("--list-models", help="List registered models and exit.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="With --run: continue a killed torch fit from its last per-epoch checkpoint.")]


@stage_command
def train(recipe: OptionalRecipeOpt = None, run: RunToTrainOpt = None, model: ModelOpt = None,
          list_models: ListModelsOpt = False, resume: ResumeOpt = False, set_: SetOpt = None, device: DeviceOpt = None,
          strict_device: StrictDeviceOpt = False, *, shared: Shared) -> Printed | None:
    """Train a model: features (from cache when possible), split, fit, predictions and metrics.

    Prints the run directory, so `RUN=$(qfactory train -r r.toml) && qfactory backtest --run "$RUN"` works.

    Example: qfactory train --recipe recipes/lstm.toml --device cuda

    Continue a killed torch fit: qfactory train --run RUN --resume
    """
    if list_models:
        _print_models(shared.json_out)
        return None
    if (recipe is None) == (run is None):
        raise QFactoryError("pass exactly one of --recipe (start a new run) or --run (train an existing split run)")
    if resume and run is None:
        raise QFactoryError("--resume continues a killed fit of an existing run: pass it with --run RUN, not --recipe")
    if run is not None:
        if set_ or model or device or strict_device:
            raise QFactoryError("--set and --model apply to new runs only; a run's recipe is fixed — use --recipe to start a new run")
        existing = shared.run(run)
        result = stages.train_existing(existing, shared.data(existing.recipe()), console.REPORTER, resume)
    else:
        resolved = load_stage_recipe(recipe, set_, model, device, strict_device)
        result = stages.train_new(resolved, shared.data(resolved), shared.runs(resolved), console.REPORTER)
    return result.path, {"run_id": result.id, "metrics": result.metrics}


def _print_models(json_out: bool) -> None:
    import json

    models = describe_models()
    if json_out:
        typer.echo(json.dumps(models))
        return
    for m in models:
        flags = ", ".join([*(k for k in FLAGS if m[k]), *(["path output"] if m["output"] == "path" else [])])
        encodings = "/".join(m["symbol_encodings"])
        typer.echo(f"{m['name']:<14} {m['family']:<9} tasks: {'/'.join(m['tasks']):<26} symbols: {encodings:<30} {flags}")
        for key, param in m["parameters"].items():
            doc = f" — {param['doc']}" if param["doc"] else ""
            typer.echo(f"    {key} = {json.dumps(param['default'])}: {param['accepts']}{doc}")
