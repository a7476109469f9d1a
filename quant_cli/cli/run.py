"""`qfactory run`: every stage the recipe configures, in one new run — for cron."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli import console, parallel
from quant_cli.cli.common import (
    DeviceOpt,
    ModelOpt,
    Printed,
    RecipeOpt,
    SetOpt,
    Shared,
    StrictDeviceOpt,
    load_stage_recipe,
    stage_command,
)


@stage_command
def run(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    *,
    shared: Shared,
) -> Printed:
    """Ingest (when [data] source is set), build features, split, train and backtest.

    Example: qfactory run --recipe recipes/quickstart.toml --model catboost --device cuda
    """
    resolved = load_stage_recipe(recipe, set_, model, device, strict_device)
    with parallel.group(resolved, None, "local", console.REPORTER, shared.json_out):  # [train] nproc: data parallel
        result = stages.run_all(resolved, shared.data(resolved), shared.runs(resolved), console.REPORTER)
    return result.path, {"run_id": result.id, "metrics": result.metrics}
