"""`qfactory split`: a new run holding the purged, embargoed split and train-only scaler."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import DataDirOpt, DebugOpt, JsonOpt, QuietOpt, RecipeOpt, RunsDirOpt, SetOpt, cli_errors, emit
from quant_cli.recipe import load_with_overrides
from quant_cli.runs.directory import data_home, runs_home


def split(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build features and labels, split chronologically with purge and embargo, fit the scaler on train.

    Prints the new run directory; `qfactory train --run RUN` continues it.

    Example: qfactory split --recipe recipes/quickstart.toml --set split.embargo=5
    """
    with cli_errors(quiet, debug):
        resolved = load_with_overrides(recipe, set_, reporter=console.REPORTER)
        result = stages.new_split_run(resolved, data_home(data_dir, resolved), runs_home(runs_dir, resolved), console.REPORTER)
        payload = {"run_id": result.id, "split": result.boundaries}
        if result.cv is not None:  # purged_kfold / cpcv: how many splits and backtest paths
            payload["cv"] = result.cv
    emit(result.path, json_out, payload)
