"""`qfactory run`: every stage the recipe configures, in one new run — for cron."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli import console, parallel
from quant_cli.cli.common import (
    DataDirOpt, DebugOpt, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, RecipeOpt, RunsDirOpt, SetOpt, StrictDeviceOpt, cli_errors, device_overrides, emit,
)
from quant_cli.io import read_json
from quant_cli.recipe import load_with_overrides
from quant_cli.runs.directory import data_home, runs_home


def run(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Ingest (when [data] source is set), build features, split, train and backtest.

    Example: qfactory run --recipe recipes/quickstart.toml --model catboost --device cuda
    """
    with cli_errors(quiet, debug):
        resolved = load_with_overrides(recipe, [*(set_ or []), *device_overrides(device, strict_device)], model, console.REPORTER)
        with parallel.group(resolved, None, "local", console.REPORTER, json_out):  # [train] nproc: data-parallel fit
            result = stages.run_all(resolved, data_home(data_dir, resolved), runs_home(runs_dir, resolved),
                                    console.REPORTER)
        payload = {"run_id": result.id, "metrics": read_json(result.path / "metrics.json")}
    emit(result.path, json_out, payload)
