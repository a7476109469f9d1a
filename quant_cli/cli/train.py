"""`qfactory train`: start a run from a recipe, or train a run that holds a split."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import (
    DataDirOpt, DebugOpt, DeviceOpt, JsonOpt, OptionalRecipeOpt, QuietOpt, RunsDirOpt, SetOpt, StrictDeviceOpt, cli_errors, device_overrides, emit,
)
from quant_cli.errors import QFactoryError
from quant_cli.io import read_json
from quant_cli.models.registry import FLAGS, describe_models
from quant_cli.recipe import Recipe, load_recipe
from quant_cli.runs.directory import data_home, resolve_run, runs_home


def train(
    recipe: OptionalRecipeOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Train this run (a path, run id or 'latest'); it must hold a split and no model.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name; same as --set model.name=NAME.", show_default=False)] = None,
    list_models: Annotated[bool, typer.Option("--list-models", help="List registered models and exit.")] = False,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train a model: features (from cache when possible), split, fit, predictions and metrics.

    Prints the run directory, so `RUN=$(qfactory train -r r.toml) && qfactory backtest --run "$RUN"` works.

    Example: qfactory train --recipe recipes/quickstart.toml --device cuda --set model.params.num_leaves=63
    """
    with cli_errors(quiet, debug):
        if list_models:
            _print_models(json_out)
            return
        result = _train(recipe, run, set_ or [], model, device_overrides(device, strict_device), data_dir, runs_dir)
        payload = {"run_id": result.id, "metrics": read_json(result.path / "metrics.json")}
    emit(result.path, json_out, payload)


def _train(recipe, run_ref, sets: list[str], model: str | None, device_sets: list[str], data_dir, runs_dir):
    if (recipe is None) == (run_ref is None):
        raise QFactoryError("pass exactly one of --recipe (start a new run) or --run (train an existing split run)")
    if run_ref is not None:
        if sets or model or device_sets:
            raise QFactoryError("--set and --model apply to new runs only; a run's recipe is fixed — use --recipe to start a new run")
        existing = resolve_run(run_ref, runs_home(runs_dir))
        return stages.train_existing(existing, data_home(data_dir, existing.recipe()), console.REPORTER)
    resolved = _load_with_model(recipe, [*sets, *device_sets], model)
    return stages.train_new(resolved, data_home(data_dir, resolved), runs_home(runs_dir, resolved), console.REPORTER)


def _load_with_model(recipe, sets: list[str], model: str | None) -> Recipe:
    """The recipe with --set items, then --model NAME (same as --set model.name=NAME).

    The recipe's model.params were written for its own model: when --model switches to another
    one they are dropped, with one notice, except those given with --set model.params.KEY=VALUE.
    """
    if model is None:
        return load_recipe(recipe, sets)
    written = load_recipe(recipe, sets)["model"]
    overrides = [*sets, f"model.name={model}"]
    if written["name"] == model or not written["params"]:
        return load_recipe(recipe, overrides)
    explicit = [item for item in sets if _param_key(item) is not None]
    keys = {_param_key(item) for item in explicit}
    kept = set(written["params"]) if "" in keys else keys  # a whole --set model.params={...} table keeps all
    dropped = sorted(set(written["params"]) - kept)
    if dropped:
        console.notice(f"--model {model}: ignoring model.params written for {written['name']} ({', '.join(dropped)}); "
                       "set them with --set model.params.KEY=VALUE")
    return load_recipe(recipe, [*overrides, "model.params={}", *explicit])


def _param_key(item: str) -> str | None:
    """'num_leaves' for --set model.params.num_leaves=7, '' for the whole table, None otherwise."""
    parts = [p.strip() for p in item.partition("=")[0].strip().split(".")]
    if parts[:2] != ["model", "params"]:
        return None
    return parts[2] if len(parts) > 2 else ""


def _print_models(json_out: bool) -> None:
    import json

    models = describe_models()
    if json_out:
        typer.echo(json.dumps(models))
        return
    for m in models:
        flags = ", ".join(k for k in FLAGS if m[k])
        encodings = "/".join(m["symbol_encodings"])
        typer.echo(f"{m['name']:<14} {m['family']:<9} tasks: {'/'.join(m['tasks']):<26} symbols: {encodings:<30} {flags}")
        for key, param in m["parameters"].items():
            typer.echo(f"    {key} = {json.dumps(param['default'])}: {param['accepts']}")
