"""`qfactory split`: a new run holding the purged, embargoed split and train-only scaler."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import Printed, RecipeOpt, SetOpt, Shared, load_stage_recipe, stage_command


@stage_command
def split(recipe: RecipeOpt, set_: SetOpt = None, *, shared: Shared) -> Printed:
    """Build features and labels, split chronologically with purge and embargo, fit the scaler on train.

    Prints the new run directory; `qfactory train --run RUN` continues it.

    Example: qfactory split --recipe recipes/quickstart.toml --set split.embargo=5
    """
    resolved = load_stage_recipe(recipe, set_)
    result = stages.new_split_run(resolved, shared.data(resolved), shared.runs(resolved), console.REPORTER)
    payload = {"run_id": result.id, "split": result.boundaries}
    if result.cv is not None:  # purged_kfold / cpcv: how many splits and backtest paths
        payload["cv"] = result.cv
    return result.path, payload
