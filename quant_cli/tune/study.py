"""`qfactory tune`: an Optuna study inside a tune run, continued by `--run`.

Layout of a tune run (a regular run directory: recipe.toml, manifest.json, split/):

    tune/study.sqlite   the Optuna study (RDB storage): every trial, its params, value, state
    tune/trials.parquet the trials table (number, state, value, seconds, params.*), rewritten after each call
    tune/best.toml      the base recipe with the best trial's values: `qfactory train --recipe tune/best.toml`

The run is committed (renamed into place) right after its split, before the first trial, so the
study survives anything: Ctrl-C marks the trial in flight failed; after a kill -9 the next
`qfactory tune --run RUN` finds it still running and marks it failed, then carries on. One
process tunes a run at a time (a lock file; the OS releases it when a process dies).

The driver asks Optuna for trials in batches of `jobs`, runs each batch on the backend
(quant_cli.backend; the evaluation is quant_cli.tune.objective) and tells the results in trial
order. The sampler is reseeded from (run.seed, trial number) for every ask, so a study's trials
depend only on the seed and the batch size: the same on `local` and `ray`, and the same whether
a study ran in one call or was interrupted and continued.

Finally the best trial is refit as a regular run (`stages.train_new` + the backtest): the only
time the study's choice meets the test segment. Its run id goes into the tune run's manifest
under `references` (so `runs gc` keeps it) and under `tune.refit`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli import stages
from quant_cli.backend import Backend, open_backend
from quant_cli.errors import DataError, RecipeError, RunError
from quant_cli.io import storage_errors, write_parquet_atomic, write_text_atomic
from quant_cli.recipe import Recipe, to_toml
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run
from quant_cli.stages import common
from quant_cli.tune import objective, space

STUDY_NAME = "qfactory"
_STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "fail": "FAIL"}


@dataclass
class TuneResult:
    run: Run
    best: dict[str, Any] | None  # number, value, params
    trials: pl.DataFrame
    refit: str | None  # run id of the best trial's refit
    added: int  # trials run by this call


def check(recipe: Recipe) -> list[space.Dimension]:
    """Everything about [tune] that can be wrong, before a run directory or any heavy work exists."""
    dims = space.parse_space(recipe)
    if recipe["tune"]["objective"].startswith("cv.") and recipe["split"]["method"] == "chronological":
        raise RecipeError(
            f"tune.objective {recipe['tune']['objective']!r} needs cross-validation folds; set split.method to "
            "'purged_kfold' or 'cpcv', or use a val.* objective"
        )
    return dims


def _check_backtest_universe(recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> None:
    """The refit (and a backtest.* objective) trades the recipe's [backtest]: a strategy that cannot
    trade the dataset's symbols is refused before the first trial, not after the whole study."""
    if not (recipe["tune"]["refit"] or recipe["tune"]["objective"].startswith("backtest.")):
        return
    try:
        snapshot = common.pin_dataset(recipe, data_dir, reporter)  # ingests a missing dataset (with its notice)
    except DataError:
        return  # no dataset yet: the split says so (or ingests it)
    common.check_universe(recipe, snapshot)


def tune_new(
    recipe: Recipe,
    data_dir: Path,
    runs_dir: Path,
    trials: int | None = None,
    backend: str = "local",
    jobs: int = 1,
    reporter: Reporter = SILENT,
) -> TuneResult:
    """`qfactory tune --recipe R`: a new tune run (features and split once), then the study."""
    dims = check(recipe)
    _check_backtest_universe(recipe, data_dir, reporter)
    with open_backend(backend, jobs) as opened:
        opened.check_shared({"data home": Path(data_dir), "runs home": Path(runs_dir)})
        run, prepared = stages.split_new(recipe, data_dir, runs_dir, reporter, model=True)
        run.update_manifest(
            tune={"objective": recipe["tune"]["objective"], "direction": objective.direction_of(recipe)}
        )
        return _tune(run, recipe, dims, prepared, data_dir, runs_dir, trials, opened, reporter)


def tune_existing(
    run: Run,
    data_dir: Path,
    runs_dir: Path,
    trials: int | None = None,
    backend: str = "local",
    jobs: int = 1,
    reporter: Reporter = SILENT,
    refit: bool = False,
) -> TuneResult:
    """`qfactory tune --run RUN`: more trials in a run's study (its split is read, not rebuilt). `refit`
    refits the best trial even when the recipe says tune.refit = false, or when a killed refit never
    committed (`tune --run RUN --refit`: no new trials unless `trials` asks for them)."""
    if "tune" not in run.manifest():
        raise RunError(
            f"run {run.id} is not a tune run (its manifest has no 'tune' entry); "
            "start one with `qfactory tune --recipe R`"
        )
    recipe = run.recipe()
    dims = check(recipe)
    _check_backtest_universe(recipe, data_dir)
    with open_backend(backend, jobs) as opened:
        opened.check_shared({"data home": Path(data_dir), "runs home": Path(runs_dir)})
        prepared = stages.load_run_split(run, data_dir) if opened.in_process and trials != 0 else None
        return _tune(run, recipe, dims, prepared, data_dir, runs_dir, trials, opened, reporter, refit)


def _tune(
    run: Run,
    recipe: Recipe,
    dims: list[space.Dimension],
    prepared: Any,
    data_dir: Path,
    runs_dir: Path,
    trials: int | None,
    backend: Backend,
    reporter: Reporter,
    refit: bool = False,
) -> TuneResult:
    """The study, under the run's tune lock and as its `tune` stage: while it runs the manifest says
    so (with this pid), so `runs ls` shows the run `running`, and `interrupted:tune` once killed."""
    from filelock import FileLock, Timeout

    folder = run.path / "tune"
    folder.mkdir(exist_ok=True)
    try:
        with FileLock(str(folder / ".lock"), timeout=0), run.stage("tune") as info:
            with storage_errors(folder / "study.sqlite"):  # SQLite: "database or disk is full", not an OSError
                study = _open_study(run, recipe, reporter)
            if prepared is not None:
                objective.share(run.path, prepared)
            try:
                wanted = recipe["tune"]["trials"] if trials is None else trials
                with storage_errors(folder / "study.sqlite"):
                    added = _optimize(study, run, recipe, dims, Path(data_dir), wanted, backend, reporter)
            finally:
                objective.forget(run.path)
            result = _finish(study, run, recipe, Path(data_dir), Path(runs_dir), added, reporter, refit)
            info["trials"] = result.trials.height
            return result
    except Timeout:
        raise RunError(
            f"run {run.id} is being tuned by another process ({folder / '.lock'} is held); wait for it to finish"
        ) from None


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()  # the library never prints: progress goes to the Reporter
    return optuna


def storage_url(run: Run) -> str:
    return f"sqlite:///{run.path / 'tune' / 'study.sqlite'}"


def _open_study(run: Run, recipe: Recipe, reporter: Reporter) -> Any:
    optuna = _optuna()
    study = optuna.create_study(
        storage=storage_url(run), study_name=STUDY_NAME, load_if_exists=True, direction=objective.direction_of(recipe)
    )
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # its process was killed
        reporter.notice(f"tune: trial {trial.number} was interrupted (its process stopped); marked failed")
    return study


def _sampler(recipe: Recipe, number: int) -> Any:
    """A sampler seeded by (run.seed, trial number): a trial's draw never depends on process history."""
    optuna = _optuna()
    cfg = recipe["tune"]
    seed = (recipe["run"]["seed"] * 1_000_003 + number) % 2**32
    if cfg["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is marked experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg["startup_trials"], constant_liar=True)


def _optimize(
    study: Any,
    run: Run,
    recipe: Recipe,
    dims: list[space.Dimension],
    data_dir: Path,
    n: int,
    backend: Backend,
    reporter: Reporter,
) -> int:
    done = 0
    while done < n:
        batch = _ask(study, recipe, dims, min(backend.jobs, n - done))
        tasks = [
            objective.TrialTask(
                t.number,
                params,
                space.apply(recipe, params),
                run.path,
                data_dir,
                objective.direction_of(recipe),
                _medians(study, recipe),
            )
            for t, params in batch
        ]
        try:
            results = backend.map(objective.evaluate, tasks)
        except BaseException:
            _fail(study, [t for t, _ in batch])  # Ctrl-C: the study stays continuable
            raise
        for (trial, params), result in zip(batch, results):
            _tell(study, trial, result)
            reporter.info(_line(result, params))
        done += len(batch)
    return done


def _ask(study: Any, recipe: Recipe, dims: list[space.Dimension], size: int) -> list[tuple[Any, dict[str, Any]]]:
    batch = []
    for _ in range(size):
        study.sampler = _sampler(recipe, len(study.get_trials(deepcopy=False)))
        trial = study.ask()
        batch.append((trial, space.sample(dims, trial, recipe["model"]["name"])))
    return batch


def _medians(study: Any, recipe: Recipe) -> dict[int, float] | None:
    """Per step, the median intermediate value of the completed trials (None: no pruning yet)."""
    optuna = _optuna()
    cfg = recipe["tune"]
    if cfg["pruner"] == "none" or recipe["tune"]["objective"].startswith("cv."):
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < max(1, cfg["startup_trials"]):
        return {}
    steps: dict[int, list[float]] = {}
    for trial in complete:
        for step, value in trial.intermediate_values.items():
            if math.isfinite(value):
                steps.setdefault(step, []).append(value)
    return {step: float(pl.Series(values).median()) for step, values in steps.items()}


def _tell(study: Any, trial: Any, result: objective.TrialResult) -> None:
    optuna = _optuna()
    for step, value in sorted(result.intermediate.items()):
        if math.isfinite(value):
            trial.report(value, step)
    trial.set_user_attr("seconds", result.seconds)
    for key, value in result.fit_info.items():
        trial.set_user_attr(key, value)
    if result.error:
        trial.set_user_attr("error", result.error)
    state = getattr(optuna.trial.TrialState, _STATES[result.state])
    study.tell(trial, result.value if result.state == "complete" else None, state=state)


def _fail(study: Any, trials: list[Any]) -> None:
    optuna = _optuna()
    for trial in trials:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _line(result: objective.TrialResult, params: dict[str, Any]) -> str:
    shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in params.items())
    outcome = {
        "complete": f"{result.value:.5g}" if result.value is not None else "-",
        "pruned": f"pruned at step {max(result.intermediate, default=0)}",
        "fail": f"failed: {result.error}",
    }[result.state]
    return f"tune: trial {result.number} {outcome} ({shown}; {result.seconds:.1f}s)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---- outputs ----------------------------------------------------------------------------------


def trials_table(study: Any) -> pl.DataFrame:
    """number, state, value, seconds, error, then one params.<key> column per searched key."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "seconds": t.user_attrs.get("seconds"),
                "error": t.user_attrs.get("error"),
                **{f"params.{k}": _cell(v) for k, v in t.params.items()},
            }
        )
    schema = {"number": pl.Int64, "state": pl.String, "value": pl.Float64, "seconds": pl.Float64, "error": pl.String}
    if not rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)


def _cell(value: Any) -> Any:
    return (
        str(value)
        if isinstance(value, str)
        else float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else str(value)
    )


def best_trial(study: Any) -> dict[str, Any] | None:
    optuna = _optuna()
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    return {"number": best.number, "value": best.value, "params": dict(best.params)}


def _finish(
    study: Any,
    run: Run,
    recipe: Recipe,
    data_dir: Path,
    runs_dir: Path,
    added: int,
    reporter: Reporter,
    force_refit: bool = False,
) -> TuneResult:
    table = trials_table(study)
    write_parquet_atomic(run.path / "tune" / "trials.parquet", table)
    best = best_trial(study)
    if best is None:
        errors = table.filter(pl.col("error").is_not_null())["error"]
        why = f"; first failure: {errors[0]}" if errors.len() else ""
        raise RunError(
            f"tune run {run.id}: no trial completed{why}; fix the recipe or widen "
            f"tune.space, then `qfactory tune --run {run.id}`"
        )
    best_recipe = space.apply(recipe, best["params"])
    write_text_atomic(run.path / "tune" / "best.toml", to_toml(best_recipe))
    wanted = recipe["tune"]["refit"] or force_refit
    refit = _refit(run, best_recipe, best, data_dir, runs_dir, reporter) if wanted else None
    counts = {s: int((table["state"] == s).sum()) for s in ("complete", "pruned", "fail")}
    run.update_manifest(tune={"trials": table.height, **counts, "best": best, "best_recipe": "tune/best.toml"})
    return TuneResult(run, best, table, refit, added)


def _refit(
    run: Run, best_recipe: Recipe, best: dict[str, Any], data_dir: Path, runs_dir: Path, reporter: Reporter
) -> str:
    """The best trial as a regular run (train + backtest): scored once on test. A best trial that was
    already refit is not refit again."""
    previous = (run.manifest().get("tune") or {}).get("refit") or {}
    if previous.get("trial") == best["number"]:
        return previous["run_id"]
    refit_recipe = {**best_recipe, "run": {**best_recipe["run"], "name": f"{best_recipe['run']['name'][:94]}-best"}}
    reporter.info(f"tune: refitting trial {best['number']} as a regular run, scored once on test")
    refit = stages.train_new(refit_recipe, data_dir, runs_dir, reporter).run
    stages.backtest_existing(refit, data_dir, reporter)
    references = [*run.manifest().get("references", []), refit.id]
    run.update_manifest(references=references, tune={"refit": {"trial": best["number"], "run_id": refit.id}})
    return refit.id
