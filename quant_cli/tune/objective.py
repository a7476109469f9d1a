"""One tuning trial: fit the trial's model on the study's shared split and score it — on the
validation segment (or purged CV over train + val), NEVER on the test segment.

A trial is a plain `TrialTask` (picklable: it runs in this process, a joblib worker or a Ray
task) and returns a `TrialResult`. The split is the tune run's `split/`, built once when the
study started; a worker process loads it once (`load_run_split`, nothing recomputed) and keeps it
with the train/val model inputs for every later trial it runs. The in-process path is handed the
study's own `Prepared`, so a study on one machine touches the feature store exactly once.

Objectives (tune.objective):
  val.<m>       model fit on train (early stopping on val, like `train`), metric m of its val scores
  cv.<m>        m of quant_cli.stages.crossval over the development rows (train + val)
  backtest.<m>  the backtest of the val scores, on bars cut before the first test timestamp

Pruning (tune.pruner = "median"): the fitting loop calls a StepReport each round/epoch; every
`report_every` steps the trial computes its objective on the val scores so far and is pruned
when that is worse than `medians[step]`, the median at that step of the trials completed when
the trial was asked (Optuna's MedianPruner rule, decided from a snapshot the driver hands in, so
a trial's fate does not depend on which worker runs it or when: same seed, same study).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.errors import QFactoryError
from quant_cli.recipe import Recipe

MINIMIZED = ("val.rmse", "val.mae")


class Pruned(Exception):
    """Raised from a StepReport to stop a trial that is doing worse than the median."""


@dataclass
class TrialTask:
    number: int
    params: dict[str, Any]
    recipe: Recipe  # the base recipe with this trial's params applied
    run_path: Path  # the tune run: split/ is shared by every trial
    data_dir: Path
    direction: str  # maximize or minimize
    medians: dict[int, float] | None  # pruning thresholds by step; None: no pruning


@dataclass
class TrialResult:
    number: int
    state: str  # complete, pruned or fail
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    fit_info: dict[str, Any] = field(default_factory=dict)


def direction_of(recipe: Recipe) -> str:
    cfg = recipe["tune"]
    return cfg["direction"] or ("minimize" if cfg["objective"] in MINIMIZED else "maximize")


# ---- the split each process shares between trials ---------------------------------------------


@dataclass
class Shared:
    prepared: Any  # dataset.table.Prepared
    inputs: dict[str, Any] | None = None
    bars: pl.DataFrame | None = None


_SHARED: dict[str, Shared] = {}


def share(run_path: Path, prepared: Any) -> None:
    """Hand this process's trials an already built split (the driver's own)."""
    _SHARED[str(run_path)] = Shared(prepared)


def forget(run_path: Path) -> None:
    _SHARED.pop(str(run_path), None)


def _shared(task: TrialTask) -> Shared:
    key = str(task.run_path)
    if key not in _SHARED:  # a worker process: load the stored split once
        from quant_cli import stages
        from quant_cli.runs.directory import Run

        _SHARED[key] = Shared(stages.load_run_split(Run(Path(task.run_path)), Path(task.data_dir)))
    return _SHARED[key]


def _train_val(shared: Shared) -> dict[str, Any]:
    if shared.inputs is None:  # one pass over the feature table for every trial of this process
        shared.inputs = shared.prepared.segment_inputs(("train", "val"))
    return shared.inputs


# ---- one trial ------------------------------------------------------------------------------------


def evaluate(task: TrialTask) -> TrialResult:
    """Run one trial; a failure is a failed trial (its one-line reason kept), never a crash of the study."""
    started = time.perf_counter()
    result = TrialResult(task.number, "complete")
    try:
        result.value, result.fit_info = _objective(task, result.intermediate)
        if result.value is None or not math.isfinite(result.value):
            result.state, result.error = (
                "fail",
                f"objective {task.recipe['tune']['objective']} is not a number ({result.value})",
            )
    except Pruned:
        result.state = "pruned"
    except QFactoryError as exc:
        result.state, result.error = "fail", str(exc)
    except Exception as exc:  # noqa: BLE001 - a library failing on one combination fails that trial only
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.state, result.error = (
            "fail",
            f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})".splitlines()[0],
        )
    result.seconds = round(time.perf_counter() - started, 3)
    result.value = _stable(result.value)
    result.intermediate = {step: _stable(v) for step, v in result.intermediate.items()}
    return result


def _stable(value: float | None) -> float | None:
    """12 significant digits: the last bits of a parallel aggregation (polars group_by means) vary
    from run to run, and must not steer the sampler onto another path."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, 11 - int(math.floor(math.log10(abs(value)))))


def _objective(task: TrialTask, intermediate: dict[int, float]) -> tuple[float, dict[str, Any]]:
    from quant_cli import stages

    shared = _shared(task)
    kind, metric = task.recipe["tune"]["objective"].split(".", 1)
    if kind == "cv":
        return _cv(task, shared, metric), {}
    inputs = _train_val(shared)
    val_rows = inputs["val"][0]
    if val_rows.height == 0:
        raise QFactoryError(
            "the validation segment is empty; set split.val > 0 so trials can be scored without the test segment"
        )
    score = lambda scores: _score(task, shared, kind, metric, val_rows, scores)  # noqa: E731
    report = _reporter(task, score, intermediate) if task.medians is not None else None
    model, _, used = stages.fit_model(
        task.recipe, shared.prepared, inputs, report=report, bars=lambda: _shared_bars(task, shared)
    )
    scores = model.predict(used["val"][1], symbols=val_rows["symbol"].to_numpy())  # NaN: a window's warm-up, unscored
    return score(scores), {k: v for k, v in model.fit_info().items() if isinstance(v, (int, float, str))}


def _reporter(task: TrialTask, score: Any, intermediate: dict[int, float]) -> Any:
    every = task.recipe["tune"]["report_every"]
    maximize = task.direction == "maximize"

    def report(step: int, val_scores: Any) -> None:
        if step % every:
            return
        value = score(val_scores())
        intermediate[step] = value
        median = (task.medians or {}).get(step)
        if median is None:
            return
        if not math.isfinite(value) or (value < median if maximize else value > median):
            raise Pruned

    return report


def _score(
    task: TrialTask, shared: Shared, kind: str, metric: str, val_rows: pl.DataFrame, scores: np.ndarray
) -> float:
    from quant_cli.backtest.metrics import prediction_metrics

    scored = val_rows.select("symbol", "ts", pl.Series("score", np.asarray(scores, dtype=np.float64)), "label")
    if kind == "val":
        value = prediction_metrics(scored).get(metric)
    else:
        value = _backtest(task, shared, scored).get(metric)
    return float("nan") if value is None else float(value)


def _shared_bars(task: TrialTask, shared: Shared) -> pl.DataFrame:
    """The bars before the test segment, loaded once per process: what validation backtests trade
    and what a model that reads raw bars sees (its windows end in train or val anyway)."""
    if shared.bars is None:
        shared.bars = _bars_before_test(task, shared.prepared)
    return shared.bars


def _backtest(task: TrialTask, shared: Shared, scored: pl.DataFrame) -> dict[str, Any]:
    from quant_cli.backtest.engine import run_backtest
    from quant_cli.backtest.outputs import resolve_periods_per_year

    recipe = task.recipe
    bars = _shared_bars(task, shared)
    frequency = recipe["data"]["frequency"] or shared.prepared.pipeline.options.get("bar_spacing") or "1d"
    ppy, _ = resolve_periods_per_year(recipe["backtest"], bars, frequency)  # as the backtest stage annualises
    return run_backtest(scored.drop("label"), bars, recipe["backtest"], ppy).summary


def _bars_before_test(task: TrialTask, prepared: Any) -> pl.DataFrame:
    """The adjusted bars the labels were measured on, cut before the first test timestamp: a
    validation backtest never sees a test-segment price."""
    from quant_cli.data import store
    from quant_cli.dataset.table import dataset_name, load_bars
    from quant_cli.runs.directory import Run

    recipe = task.recipe
    version = (Run(Path(task.run_path)).manifest().get("dataset") or {}).get("version")
    bars = prepared.pipeline.adjustment.apply(
        load_bars(recipe, store.pin(Path(task.data_dir), dataset_name(recipe), version))
    )
    test = prepared.rows.filter(pl.col("segment") == "test")
    return bars.filter(pl.col("ts") < test["ts"].min()) if test.height else bars


def _cv(task: TrialTask, shared: Shared, metric: str) -> float:
    from quant_cli import stages
    from quant_cli.splits.embargo import default_embargo
    from quant_cli.stages.crossval import cross_validate

    recipe = task.recipe
    embargo = default_embargo(recipe["split"]["embargo"], recipe["label"]["horizon"])
    _, summary = cross_validate(shared.prepared, recipe["split"], embargo, lambda: stages.new_model(recipe))
    return float(summary[metric])
