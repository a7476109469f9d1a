"""`qfactory walkforward`: refit the whole pipeline per fold over rolling or anchored windows."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.common import (
    BackendOpt, DataDirOpt, DebugOpt, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, RecipeOpt, RunsDirOpt, SetOpt, StrictDeviceOpt, cli_errors,
    device_overrides, emit,
)
from quant_cli.recipe import load_with_overrides
from quant_cli.runs.directory import data_home, runs_home
from quant_cli.walkforward.stage import walkforward_new

JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Folds fitted at once (default: every core); results do not depend on it.", show_default=False)]
ContinueOpt = Annotated[bool, typer.Option("--continue-on-error", help="Leave a failed fold out of the stitched series (marked failed in folds.json) instead of failing.")]


def walkforward(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    model: ModelOpt = None,
    jobs: JobsOpt = None,
    continue_on_error: ContinueOpt = False,
    backend: BackendOpt = "local",
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Walk forward: per fold, refit features' preprocessing and the model on the training window only,
    score the test window; stitch the scores, backtest them, and deflate the Sharpe ratio by the trials.

    Windows come from [walkforward] (mode, train, test, step, validation); the dataset must be ingested.
    Writes walkforward/ (folds.json, predictions.parquet, backtest/) and metrics.json's walkforward block.

    --backend ray fits the folds as Ray tasks (RAY_ADDRESS, else a local Ray instance), with the same results.

    Example: qfactory walkforward --recipe recipes/walkforward.toml --jobs 2 --set walkforward.mode=anchored
    """
    with cli_errors(quiet, debug):
        resolved = load_with_overrides(recipe, [*(set_ or []), *device_overrides(device, strict_device)], model, console.REPORTER)
        result = walkforward_new(resolved, data_home(data_dir, resolved), runs_home(runs_dir, resolved), jobs, continue_on_error,
                              console.REPORTER, backend=backend)
        payload = {"run_id": result.id, "walkforward": result.walkforward}
    emit(result.path, json_out, payload)
