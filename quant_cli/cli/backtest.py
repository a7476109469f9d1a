"""`qfactory backtest`: trade a run's predictions (or a weights file) with next-bar execution and costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import OptionalRecipeOpt, Printed, SetOpt, Shared, stage_command
from quant_cli.errors import RecipeError
from quant_cli.recipe import load_recipe

OptionalRunOpt = Annotated[
    str | None, typer.Option("--run", help="Run directory, run id, or 'latest'.", show_default=False)
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Parquet or CSV with symbol, ts, weight: backtest these target weights "
        "(needs --recipe for the dataset and [backtest]).",
        show_default=False,
    ),
]


@stage_command
def backtest(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    recipe: OptionalRecipeOpt = None,
    set_: SetOpt = None,
    *,
    shared: Shared,
) -> Printed:
    """Backtest a trained run's scores (or a weights file); writes backtest/ and adds backtest.* to metrics.json.

    Example: qfactory backtest --run latest

    Example: qfactory backtest --weights weights.parquet --recipe recipes/quickstart.toml
    """
    if (
        (run is None) == (weights is None)
        or (weights is not None and recipe is None)
        or (run is not None and (recipe or set_))
    ):
        raise RecipeError("backtest: pass either --run RUN (a trained run), or --weights FILE --recipe R (a new run)")
    if weights is not None:
        loaded = load_recipe(recipe, set_)
        result = stages.backtest_weights(loaded, weights, shared.data(loaded), shared.runs(loaded), console.REPORTER)
    else:
        target = shared.run(run)
        result = stages.backtest_existing(target, shared.data(target.recipe()), console.REPORTER)
    return result.path, {"run_id": result.id, "backtest": result.backtest}
