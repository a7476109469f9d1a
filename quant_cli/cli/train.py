"""`qfactory train`: start a run from a recipe, or train a run that holds a split."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.backend import check_backend
from quant_cli.cli import console, parallel
from quant_cli.cli.common import (
    DataDirOpt, DebugOpt, DeviceOpt, JsonOpt, ModelOpt, OptionalRecipeOpt, QuietOpt, RunsDirOpt, SetOpt, StrictDeviceOpt, cli_errors, device_overrides, emit,
)
from quant_cli.errors import QFactoryError
from quant_cli.io import read_json
from quant_cli.models.registry import FLAGS, describe_models
from quant_cli.models.torch.topology import torchrun_rank
from quant_cli.recipe import load_with_overrides
from quant_cli.runs.directory import data_home, resolve_run, runs_home


def train(
    recipe: OptionalRecipeOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Train this run (a path, run id or 'latest'); it must hold a split and no model.", show_default=False)] = None,
    model: ModelOpt = None,
    list_models: Annotated[bool, typer.Option("--list-models", help="List registered models and exit.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="With --run: continue a killed torch fit from its last per-epoch checkpoint.")] = False,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", min=1, show_default=False,
        help="Data-parallel processes for a torch model (same as --set train.nproc=N): gloo on CPU, nccl on CUDA "
             "(one GPU each).")] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="With --nproc: local (processes on this machine) or ray (ranks 1..N-1 as Ray tasks; "
                          "RAY_ADDRESS).")] = "local",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train a model: features (from cache when possible), split, fit, predictions and metrics.

    Prints the run directory, so `RUN=$(qfactory train -r r.toml) && qfactory backtest --run "$RUN"` works.

    Example: qfactory train --recipe recipes/lstm.toml --device cuda

    Continue a killed torch fit: qfactory train --run RUN --resume

    Data parallel, 4 processes on this machine: qfactory train --recipe recipes/lstm.toml --nproc 4
    (several machines: run the same command under torchrun on each; see the README)
    """
    with cli_errors(quiet, debug):
        if list_models:
            _print_models(json_out)
            return
        if torchrun_rank():  # a torchrun rank other than 0 only trains what rank 0 sends
            parallel.serve_torchrun(parallel.worker_device(recipe, device))
            return
        check_backend(backend)
        result = _train(recipe, run, set_ or [], model, device_overrides(device, strict_device), data_dir, runs_dir,
                        resume, nproc, backend, json_out)
        payload = {"run_id": result.id, "metrics": read_json(result.path / "metrics.json")}
    emit(result.path, json_out, payload)


def _train(recipe, run_ref, sets: list[str], model: str | None, device_sets: list[str], data_dir, runs_dir,
           resume: bool = False, nproc: int | None = None, backend: str = "local", json_out: bool = False):
    if (recipe is None) == (run_ref is None):
        raise QFactoryError("pass exactly one of --recipe (start a new run) or --run (train an existing split run)")
    if resume and run_ref is None:
        raise QFactoryError("--resume continues a killed fit of an existing run: pass it with --run RUN, not --recipe")
    if run_ref is not None:
        if sets or model or device_sets:
            raise QFactoryError("--set and --model apply to new runs only; a run's recipe is fixed — use --recipe to start a new run")
        existing = resolve_run(run_ref, runs_home(runs_dir))
        with parallel.group(existing.recipe(), nproc, backend, console.REPORTER, json_out):
            return stages.train_existing(existing, data_home(data_dir, existing.recipe()), console.REPORTER, resume)
    nproc_set = [f"train.nproc={nproc}"] if nproc is not None else []
    resolved = load_with_overrides(recipe, [*sets, *device_sets, *nproc_set], model, console.REPORTER)
    with parallel.group(resolved, None, backend, console.REPORTER, json_out):
        return stages.train_new(resolved, data_home(data_dir, resolved), runs_home(runs_dir, resolved),
                                console.REPORTER)


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
