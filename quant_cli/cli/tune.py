"""`qfactory tune`: an Optuna study over the recipe's [tune.space], or more trials of a tune run."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli.backend import check_backend
from quant_cli.cli import console
from quant_cli.cli.common import (
    BackendOpt,
    JobsOpt,
    OptionalRecipeOpt,
    Printed,
    SetOpt,
    Shared,
    load_stage_recipe,
    stage_command,
)
from quant_cli.errors import QFactoryError

_SHOWN = 10  # trials listed on stderr (best first); tune/trials.parquet holds them all


ContinueRunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Continue this tune run's study (a path, run id or 'latest').", show_default=False),
]
TrialsOpt = Annotated[
    int | None,
    typer.Option("--trials", "-n", min=1, help="Trials to run now (default: tune.trials).", show_default=False),
]
RefitOpt = Annotated[
    bool,
    typer.Option(
        "--refit",
        help="With --run: refit the best trial now (after a killed refit); no new trials unless --trials.",
    ),
]


@stage_command
def tune(
    recipe: OptionalRecipeOpt = None,
    run: ContinueRunOpt = None,
    trials: TrialsOpt = None,
    refit: RefitOpt = False,
    backend: BackendOpt = "local",
    jobs: JobsOpt = 1,
    set_: SetOpt = None,
    *,
    shared: Shared,
) -> Printed:
    """Tune the recipe's [tune.space] with Optuna on the validation segment (never the test segment).

    Features and the split are computed once and shared by every trial. The study lives in
    <run>/tune/study.sqlite, so `--run RUN` continues it (also after Ctrl-C or a kill). Writes
    tune/trials.parquet and tune/best.toml, and refits the best trial as a regular run scored once on test.

    Example: qfactory tune --recipe recipes/lightgbm.toml --trials 50 --jobs 2

    Redo a killed refit of the best trial: qfactory tune --run RUN --refit
    """
    from quant_cli.tune import study

    result = _tune(study, recipe, run, trials, backend, jobs, set_ or [], shared, refit)
    console.info(_table(result))
    payload = {
        "run_id": result.run.id,
        "best": result.best,
        "trials": result.trials.height,
        "added": result.added,
        "refit_run": result.refit,
        "best_recipe": str(result.run.path / "tune" / "best.toml"),
    }
    return result.run.path, payload


def _tune(study, recipe, run_ref, trials, backend, jobs, sets, shared: Shared, refit=False):  # noqa: ANN001
    check_backend(backend)
    if (recipe is None) == (run_ref is None):
        raise QFactoryError("pass exactly one of --recipe (start a study) or --run (continue a tune run's study)")
    if refit and run_ref is None:
        raise QFactoryError(
            "--refit refits the best trial of an existing tune run: pass it with --run RUN, not --recipe"
        )
    if run_ref is not None:
        if sets:
            raise QFactoryError(
                "--set applies to new studies only; a tune run's recipe is fixed — use --recipe to start another"
            )
        existing = shared.run(run_ref)
        recipe_ = existing.recipe()
        trials = 0 if refit and trials is None else trials
        homes = shared.data(recipe_), shared.runs(recipe_)
        return study.tune_existing(existing, *homes, trials, backend, jobs, console.REPORTER, refit)
    resolved = load_stage_recipe(recipe, sets)
    homes = shared.data(resolved), shared.runs(resolved)
    return study.tune_new(resolved, *homes, trials, backend, jobs, console.REPORTER)


def _table(result) -> str:  # noqa: ANN001
    """The best trials as aligned columns, and where the rest are."""
    import polars as pl

    table = result.trials
    best = table.filter(pl.col("state") == "complete").sort("value", descending=_maximize(result)).head(_SHOWN)
    params = [c for c in table.columns if c.startswith("params.")]
    columns = ["number", "value", "seconds", *params]
    rows = [{c: f"{v:.5g}" if isinstance(v, float) else v for c, v in r.items()} for r in best.iter_rows(named=True)]
    listing = console.table(rows, columns, headers=[c.removeprefix("params.") for c in columns])
    counts = {s: int((table["state"] == s).sum()) for s in ("complete", "pruned", "fail")}
    summary = (
        f"tune: {table.height} trials ({counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['fail']} failed); "
        f"best trial {result.best['number']}: {result.best['value']:.5g}; all "
        f"trials in {result.run.path / 'tune' / 'trials.parquet'}"
    )
    refit = f"\ntune: best recipe {result.run.path / 'tune' / 'best.toml'}" + (
        f"; refit run {result.refit}" if result.refit else ""
    )
    return listing + "\n" + summary + refit


def _maximize(result) -> bool:  # noqa: ANN001
    return (result.run.manifest().get("tune") or {}).get("direction", "maximize") == "maximize"
