"""The train stage: cross-validation when the split asks for it, the fit, predictions and metrics.

`train --run` recomputes nothing: it reads split/ (rows with segments and weights, the
FittedPipeline) and the run's cached feature version.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.backtest.metrics import classification_metrics, prediction_metrics
from quant_cli.data import store
from quant_cli.dataset.table import Prepared, load_bars, load_split
from quant_cli.errors import RecipeError, RunError
from quant_cli.io import write_json_atomic, write_parquet_atomic
from quant_cli.models.base import Model, StepReport
from quant_cli.models.covariates import bar_inputs
from quant_cli.recipe import Recipe, fingerprint
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.stages import fitting
from quant_cli.stages.common import check_recipe, device_of, embargo_of, make_model, new_model, pin_checked, pinned_for
from quant_cli.stages.crossval import cross_validate
from quant_cli.stages.results import TrainResult, as_written
from quant_cli.stages.split import split_stage

CHECKPOINTS = "checkpoints"  # a run's per-epoch torch checkpoints (last.pt, best.pt): `train --run RUN --resume`


def _fit(
    model: Model,
    prepared: Prepared,
    inputs: dict[str, Any],
    early_stopping: int,
    reporter: Reporter,
    report: StepReport | None = None,
) -> float:
    """Fit on the segment inputs (tabular or sequence alike): quant_cli.stages.fitting.fit_model."""
    return fitting.fit_model(model, prepared, inputs, early_stopping, reporter, report)


def fit_model(
    recipe: Recipe,
    prepared: Prepared,
    inputs: dict[str, Any] | None = None,
    reporter: Reporter = SILENT,
    report: StepReport | None = None,
    bars: Callable[[], pl.DataFrame] | None = None,
) -> tuple[Model, float, dict[str, Any]]:
    """A new model of the recipe fit on train with val (`inputs`: segment_inputs' train and val for a
    tabular model, built here when None or when the model reads panel windows), as the train stage
    fits it: (model, seconds, the inputs it was fit on). `report` is the fitting loop's StepReport
    (tuning prunes through it); `bars` gives the adjusted bars whose channels a model that reads
    raw bars (model.params.inputs = bars/both) sees beside the features, called only for such a model."""
    model = new_model(recipe, reporter)
    if model.reads_bars() and bars is None:
        raise RecipeError(
            f"model '{model.name}' reads the bars (model.params.inputs or model.static_columns); pass them to fit it"
        )
    if inputs is None or model.uses_panel():
        channels = (
            bar_inputs(model, bars(), recipe["features"]["timeframes"])
            if model.reads_bars() and bars is not None
            else None
        )
        inputs = fitting.segment_inputs(model, prepared, ("train", "val"), channels)
    return model, _fit(model, prepared, inputs, recipe["train"]["early_stopping"], reporter, report), inputs


def _bar_channels(
    model: Model, recipe: Recipe, prepared: Prepared, snapshot: store.Snapshot | None
) -> pl.DataFrame | None:
    """Raw-bar channels and static columns for a model that reads them (model.params.inputs = bars/both,
    model.static_columns), from the pinned snapshot with the run's price adjustment."""
    if not model.reads_bars():
        return None
    bars = prepared.pipeline.adjustment.apply(load_bars(recipe, snapshot))
    return bar_inputs(model, bars, recipe["features"]["timeframes"])


def train_stage(
    run: Run,
    recipe: Recipe,
    prepared: Prepared,
    reporter: Reporter,
    resume: bool = False,
    snapshot: store.Snapshot | None = None,
    init: Any = None,
) -> dict[str, Any]:
    """Fit, predict val and test, and write model/, predictions.parquet and metrics.json; returns
    the metrics as written. `init`: a warmstart.Pretrained the model starts from."""
    with run.stage("train") as info:
        metrics: dict[str, Any] = {}
        device = device_of(recipe, reporter)
        if recipe["split"]["method"] != "chronological":
            metrics["cv"] = _cv_stage(run, recipe, prepared, device, reporter)
        model = make_model(recipe, device, reporter)
        model.set_checkpoints(run.path / CHECKPOINTS, resume)  # per-epoch last/best of torch models
        channels = _bar_channels(model, recipe, prepared, snapshot)
        if init is not None:
            _check_init(init, model, prepared, channels)
        inputs = fitting.segment_inputs(model, prepared, ("train", "val"), channels)
        seconds = _fit(model, prepared, inputs, recipe["train"]["early_stopping"], reporter)
        del inputs  # the training matrix goes before the scoring one is built: peak memory is one of them
        inputs = fitting.segment_inputs(model, prepared, ("val", "test"), channels)
        with stage_outputs(run, "model") as folder:
            model.save(folder)
            if (importance := model.feature_importance()) is not None:
                write_json_atomic(folder / "feature_importance.json", importance)
        predictions = _predict_segments(model, inputs)
        write_parquet_atomic(run.path / "predictions.parquet", predictions)
        metrics = {**_segment_metrics(predictions), **metrics}
        if model.fit_info().get("val_in_sample"):  # blending fit its meta-model on these rows
            metrics["val"]["in_sample"] = True
        train = prepared.segment("train")
        metrics["train"] = {
            "seconds": round(seconds, 3),
            "rows": train.height,
            "symbols": train["symbol"].n_unique(),
            "model": model.name,
            **model.fit_info(),
        }
        write_json_atomic(run.path / "metrics.json", metrics)
        used = model.fit_info().get("device", "cpu")
        info.update(model=model.name, device=used, seconds_fit=round(seconds, 3))
    run.update_manifest(device=used)
    if init is not None:  # what the model was initialised from: the run and every tensor loaded
        run.update_manifest(initialised_from=model.fit_info()["init"])
    reporter.info(
        f"train: {model.name} on {train.height:,} rows; val IC "
        f"{metrics['val'].get('ic', float('nan')):.4f}{' (in-sample)' if metrics['val'].get('in_sample') else ''}, "
        f"test IC {metrics['test'].get('ic', float('nan')):.4f}"
    )
    return as_written(metrics)


def _cv_stage(run: Run, recipe: Recipe, prepared: Prepared, device: str, reporter: Reporter) -> dict[str, Any]:
    oof, summary = cross_validate(
        prepared, recipe["split"], embargo_of(recipe), lambda: make_model(recipe, device, reporter), reporter
    )
    with stage_outputs(run, "cv") as folder:
        write_parquet_atomic(folder / "oof.parquet", oof)
        write_json_atomic(folder / "summary.json", summary)
    reporter.info(
        f"cv: {summary['folds']['n_splits']} splits, "
        f"{summary['folds']['n_paths']} path(s); IC {summary['ic_mean']:.4f} ± "
        f"{summary['ic_std']:.4f}"
    )
    return {k: v for k, v in summary.items() if k != "folds"} | {
        "n_splits": summary["folds"]["n_splits"],
        "n_paths": summary["folds"]["n_paths"],
    }


def _predict_segments(model: Model, inputs: dict[str, Any]) -> pl.DataFrame:
    """symbol, ts, segment, score, label (+ p_<class>) of every row the model scores: rows it cannot
    score (a sequence window's warm-up) are absent, so consumers join by (symbol, ts)."""
    return fitting.predict_segments(model, inputs)


def _segment_metrics(predictions: pl.DataFrame) -> dict[str, Any]:
    out = {}
    for seg in ("val", "test"):
        part = predictions.filter(pl.col("segment") == seg)
        out[seg] = {**prediction_metrics(part), **classification_metrics(part)}
    return out


def train_new(
    recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT, init: Path | None = None
) -> TrainResult:
    """`qfactory train --recipe R`: a new run with features (cached), split and a trained model;
    `init`: a pretrain run whose encoder warm-starts the model (quant_cli.models.torch.warmstart)."""
    check_recipe(recipe, reporter)
    pretrained = _pretrained(recipe, init, reporter) if init is not None else None
    snapshot = pin_checked(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        if pretrained is not None:  # a warm start is another experiment than training from scratch (trial ledger)
            own = run.manifest()["fingerprints"]["experiment"]
            warm = fingerprint({"recipe": own, "init": pretrained.experiment})
            run.update_manifest(fingerprints={"experiment": warm})
        prepared = split_stage(run, recipe, snapshot, reporter).prepared
        metrics = train_stage(run, recipe, prepared, reporter, snapshot=snapshot, init=pretrained)
    return TrainResult(run, metrics)


def train_existing(run: Run, data_dir: Path, reporter: Reporter = SILENT, resume: bool = False) -> TrainResult:
    """`qfactory train --run RUN`: train a run that so far holds only a split, from its stored
    split and cached features (nothing is recomputed). `resume` continues a killed torch fit from
    its last per-epoch checkpoint; without it a fit starts afresh."""
    run.begin_stage("train", reporter)  # refuses a committed train; clears a killed one's leftovers
    _checkpoints_for(run, resume)
    recipe = run.recipe()
    snapshot = pinned_for(run, recipe, data_dir)
    check_recipe(recipe, reporter)
    prepared = load_split(run.path / "split", recipe, snapshot)
    return TrainResult(run, train_stage(run, recipe, prepared, reporter, resume, snapshot))


def _pretrained(recipe: Recipe, init: Path, reporter: Reporter):
    """The pretrain run `init` for this recipe's model, checked before any heavy work."""
    from quant_cli.models.torch.warmstart import check_model, open_pretrained
    from quant_cli.stages.pretrain import supported_models

    name = recipe["model"]["name"]
    if name not in supported_models():
        raise RecipeError(
            f"--init warm-starts a pretrained encoder; model '{name}' has none (use one of "
            f"{', '.join(supported_models())})"
        )
    pretrained = open_pretrained(init)
    check_model(pretrained, name)
    return pretrained


def _check_init(init: Any, model: Model, prepared: Prepared, channels: pl.DataFrame | None) -> None:
    """Refuse a pretrain run whose inputs differ from this run's; else the model starts from it."""
    from quant_cli.models.torch.warmstart import check_inputs, input_record

    inputs = model.params["inputs"]
    used = [c for c in channels.columns if c not in ("symbol", "ts")] if channels is not None else []
    check_inputs(init, input_record(prepared.features, prepared.pipeline.to_json(), inputs, used))
    model.set_init(init)


def _checkpoints_for(run: Run, resume: bool) -> None:
    folder = run.path / CHECKPOINTS
    if resume and not (folder / "last.pt").is_file():
        raise RunError(
            f"run {run.id} has no checkpoint to resume ({CHECKPOINTS}/last.pt is missing: only torch models "
            f"write one, after each epoch); train it afresh with `qfactory train --run {run.id}`"
        )
    if not resume and folder.exists():
        shutil.rmtree(folder)  # a fresh fit: a killed fit's checkpoints must not be mistaken for this one's
