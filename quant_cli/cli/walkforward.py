"""`qfactory walkforward`: refit the whole pipeline per fold over rolling or anchored windows."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.common import (
    BackendOpt,
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
from quant_cli.walkforward.stage import walkforward_new

JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Folds fitted at once (default: every core); results do not depend on it.",
        show_default=False,
    ),
]
ContinueOpt = Annotated[
    bool,
    typer.Option(
        "--continue-on-error",
        help="Leave a failed fold out of the stitched series (marked failed in folds.json) instead of failing.",
    ),
]


@stage_command
def walkforward(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    model: ModelOpt = None,
    jobs: JobsOpt = None,
    continue_on_error: ContinueOpt = False,
    backend: BackendOpt = "local",
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    *,
    shared: Shared,
) -> Printed:
    """Walk forward: per fold, refit features' preprocessing and the model on the training window only,
    score the test window; stitch the scores, backtest them, and deflate the Sharpe ratio by the trials.

    Windows come from [walkforward] (mode, train, test, step, validation); the dataset must be ingested.
    Writes walkforward/ (folds.json, predictions.parquet, backtest/) and metrics.json's walkforward block.

    --backend ray fits the folds as Ray tasks (RAY_ADDRESS, else a local Ray instance), with the same results.

    Example: qfactory walkforward --recipe recipes/walkforward.toml --jobs 2 --set walkforward.mode=anchored
    """
    resolved = load_stage_recipe(recipe, set_, model, device, strict_device)
    result = walkforward_new(
        resolved,
        shared.data(resolved),
        shared.runs(resolved),
        jobs,
        continue_on_error,
        console.REPORTER,
        backend=backend,
    )
    return result.path, {"run_id": result.id, "walkforward": result.walkforward}
