"""`qfactory train`: start a run from a recipe, or train a run that holds a split."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.backend import check_backend
from quant_cli.cli import console, parallel
from quant_cli.cli.common import (
    DeviceOpt,
    ModelOpt,
    OptionalRecipeOpt,
    Printed,
    SetOpt,
    Shared,
    StrictDeviceOpt,
    load_stage_recipe,
    stage_command,
)
from quant_cli.errors import QFactoryError
from quant_cli.models.registry import FLAGS, describe_models
from quant_cli.models.torch.topology import torchrun_rank
from quant_cli.runs.directory import resolve_run

RunToTrainOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        help="Train this run (a path, run id or 'latest'); it must hold a split and no model.",
        show_default=False,
    ),
]
InitOpt = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="With --recipe: warm-start the model from this pretrain run (`qfactory pretrain`; a path, run id or "
        "'latest'): every tensor of the same name and shape.",
        show_default=False,
    ),
]
ListModelsOpt = Annotated[bool, typer.Option("--list-models", help="List registered models and exit.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="With --run: continue a killed torch fit from its last per-epoch checkpoint.")
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        "--nproc",
        min=1,
        show_default=False,
        help="Data-parallel processes for a torch model (same as --set train.nproc=N): gloo on CPU, nccl on CUDA "
        "(one GPU each).",
    ),
]
ParallelBackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="With --nproc: local (processes on this machine) or ray (ranks 1..N-1 as Ray tasks; RAY_ADDRESS).",
    ),
]


@stage_command
def train(
    recipe: OptionalRecipeOpt = None,
    run: RunToTrainOpt = None,
    model: ModelOpt = None,
    list_models: ListModelsOpt = False,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    nproc: NprocOpt = None,
    backend: ParallelBackendOpt = "local",
    init: InitOpt = None,
    *,
    shared: Shared,
) -> Printed | None:
    """Train a model: features (from cache when possible), split, fit, predictions and metrics.

    Prints the run directory, so `RUN=$(qfactory train -r r.toml) && qfactory backtest --run "$RUN"` works.

    Example: qfactory train --recipe recipes/lstm.toml --device cuda

    Continue a killed torch fit: qfactory train --run RUN --resume

    Warm start from a pretrain run: PRE=$(qfactory pretrain -r recipes/lstm.toml) &&
    qfactory train --recipe recipes/lstm.toml --init "$PRE"

    Data parallel, 4 processes on this machine: qfactory train --recipe recipes/lstm.toml --nproc 4
    (several machines: run the same command under torchrun on each; see the README)
    """
    if list_models:
        _print_models(shared.json_out)
        return None
    if torchrun_rank():  # a torchrun rank other than 0 only trains what rank 0 sends, and prints nothing
        parallel.serve_torchrun(parallel.worker_device(recipe, device))
        return None
    check_backend(backend)
    if (recipe is None) == (run is None):
        raise QFactoryError("pass exactly one of --recipe (start a new run) or --run (train an existing split run)")
    if resume and run is None:
        raise QFactoryError("--resume continues a killed fit of an existing run: pass it with --run RUN, not --recipe")
    if init is not None and run is not None:
        raise QFactoryError("--init warm-starts a new run: pass it with --recipe R, not --run")
    if run is not None:
        if set_ or model or device or strict_device:
            raise QFactoryError(
                "--set and --model apply to new runs only; a run's recipe is fixed — use --recipe to start a new run"
            )
        existing = shared.run(run)
        with parallel.group(existing.recipe(), nproc, backend, console.REPORTER, shared.json_out):
            result = stages.train_existing(existing, shared.data(existing.recipe()), console.REPORTER, resume)
    else:
        nproc_set = [f"train.nproc={nproc}"] if nproc is not None else []
        resolved = load_stage_recipe(recipe, [*(set_ or []), *nproc_set], model, device, strict_device)
        with parallel.group(resolved, None, backend, console.REPORTER, shared.json_out):
            runs_dir = shared.runs(resolved)
            pretrained = None if init is None else resolve_run(init, runs_dir, "--init").path
            result = stages.train_new(resolved, shared.data(resolved), runs_dir, console.REPORTER, init=pretrained)
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
        typer.echo(
            f"{m['name']:<14} {m['family']:<9} tasks: {'/'.join(m['tasks']):<26} symbols: {encodings:<30} {flags}"
        )
        for key, param in m["parameters"].items():
            doc = f" — {param['doc']}" if param["doc"] else ""
            typer.echo(f"    {key} = {json.dumps(param['default'])}: {param['accepts']}{doc}")
