"""Stage orchestration over run directories: ingest → split → train → backtest, and `run`.

Each public function here is what one CLI command calls. A new run is staged and appears only if
every requested stage succeeds; continuing a run (`--run`) adds its outputs atomically.

Data. Every command pins one dataset version when it starts (`data.store.pin` → Snapshot) and
reads bars only through it (labels, the feature build, the backtest); the run manifest records
`dataset: {name, version, content_hash}` and the price adjustment, and continuing a run pins
that version again. `train --run` recomputes nothing: it reads split/ (rows with segments and
weights, the FittedPipeline) and the run's cached feature version.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.report import SILENT, Reporter
from quant_cli.backtest.outputs import read_weights, write_backtest
from quant_cli.backtest.report import render_run_reports
from quant_cli.models.crossval import cross_validate
from quant_cli.data import store
from quant_cli.dataset.table import KEYS, Prepared, check_task, dataset_name, load_bars, load_split, prepare, write_split
from quant_cli.errors import RecipeError, RunError
from quant_cli.io import read_run_json, read_run_parquet, staged_dir, write_json_atomic, write_parquet_atomic
from quant_cli.backtest.metrics import classification_metrics, prediction_metrics
from quant_cli.models.base import Model, StepReport
from quant_cli.models.device import resolve_device
from quant_cli.models import fitting
from quant_cli.models.bars import bar_channels
from quant_cli.models.registry import create_model
from quant_cli.pipeline import adjust
from quant_cli.pipeline.adjust import Adjustment
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.recipe import Recipe
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.runs.ledger import Trial, deflated_among_runs
from quant_cli.splits.chronological import cv_folds, development, explicit_boundaries, folds_summary, segment_counts
from quant_cli.splits.embargo import default_embargo


def _embargo(recipe: Recipe) -> int | str:
    return default_embargo(recipe["split"]["embargo"], recipe["label"]["horizon"])


def _weighted(recipe: Recipe) -> bool:
    return recipe["split"]["sample_weight"] != "none" or recipe["split"]["time_decay"] < 1.0


def _write_split(run: Run, recipe: Recipe, prepared: Prepared, snapshot: store.Snapshot, reporter: Reporter) -> None:
    kept = prepared.kept
    counts, dropped = segment_counts(kept), prepared.dropped()
    with stage_outputs(run, "split") as folder:
        write_json_atomic(folder / "boundaries.json", {
            **prepared.plan.to_json(), "method": recipe["split"]["method"], "horizon": recipe["label"]["horizon"],
            "label": recipe["label"]["kind"], "execution": recipe["backtest"]["execution"], "dropped": dropped,
            "segments": {seg: {k: v for k, v in c.items() if k != "rows_per_symbol"} for seg, c in counts.items()},
        })
        write_json_atomic(folder / "counts.json", counts)
        write_split(folder, prepared, _weighted(recipe))
        folds = cv_folds(kept, recipe["split"], _embargo(recipe))
        if folds is not None:
            summary = folds_summary(folds, development(kept))
            write_json_atomic(folder / "folds.json", summary)
            reporter.info(f"split: {recipe['split']['method']} with {summary['n_splits']} splits and {summary['n_paths']} backtest path(s) over train + val")
        if kept["weight"].null_count() < kept.height:
            write_parquet_atomic(folder / "weights.parquet", kept.filter(pl.col("weight").is_not_null()).select(*KEYS, "weight"))
    run.update_manifest(fingerprints={"features": prepared.fingerprint, "dataset": snapshot.content_hash},
                        dataset=_dataset_record(snapshot), adjust=prepared.pipeline.adjustment.to_json())
    summary = ", ".join(f"{seg} {c['rows']:,}" for seg, c in counts.items())
    reporter.info(f"split: {summary} rows; purged {sum(dropped['purged'].values()):,}, embargoed {sum(dropped['embargoed'].values()):,}")


def _dataset_record(snapshot: store.Snapshot) -> dict[str, Any]:
    return {"name": snapshot.dataset, "version": snapshot.version, "content_hash": snapshot.content_hash}


def _split_stage(run: Run, recipe: Recipe, snapshot: store.Snapshot, reporter: Reporter) -> Prepared:
    with run.stage("split") as info:
        # Named before the long read: `data vacuum` keeps versions that run manifests (staging ones
        # too) pin, so another job's replace + vacuum cannot delete the files this split is reading.
        run.update_manifest(dataset=_dataset_record(snapshot))
        with reporter.working("split: features, labels, purge and embargo, train-only preprocessing"):
            prepared = prepare(recipe, snapshot, reporter=reporter)
        _write_split(run, recipe, prepared, snapshot, reporter)
        info["rows"] = prepared.kept.height
    return prepared


CHECKPOINTS = "checkpoints"  # a run's per-epoch torch checkpoints (last.pt, best.pt): `train --run RUN --resume`


def _new_model(recipe: Recipe, device: str = "cpu", reporter: Reporter = SILENT) -> Model:
    """Constructing validates the model name and parameters, so call it before any heavy work."""
    cfg = recipe["model"]
    return create_model(cfg["name"], cfg["task"], cfg["params"], recipe["run"]["seed"], recipe["train"]["threads"],
                        device=device, symbol_encoding=cfg["symbol_encoding"], unseen_symbols=cfg["unseen_symbols"],
                        reporter=reporter, train=recipe["train"])


def _device(recipe: Recipe, reporter: Reporter) -> str:
    """Resolved once per run: a missing GPU warns once (or fails with strict_device)."""
    return resolve_device(recipe["train"]["device"], recipe["train"]["strict_device"], reporter)


def _fit(model: Model, prepared: Prepared, inputs: dict[str, Any], early_stopping: int, reporter: Reporter,
         report: StepReport | None = None) -> float:
    """Fit on the segment inputs (tabular or sequence alike): quant_cli.models.fitting.fit_model."""
    return fitting.fit_model(model, prepared, inputs, early_stopping, reporter, report)


def new_model(recipe: Recipe, reporter: Reporter = SILENT) -> Model:
    """A new, unfitted model of the recipe on its resolved device."""
    return _new_model(recipe, _device(recipe, reporter), reporter)


def fit_model(recipe: Recipe, prepared: Prepared, inputs: dict[str, Any] | None = None, reporter: Reporter = SILENT,
              report: StepReport | None = None, bars: Callable[[], pl.DataFrame] | None = None) -> tuple[Model, float, dict[str, Any]]:
    """A new model of the recipe fit on train with val (`inputs`: segment_inputs' train and val for a
    tabular model, built here when None or when the model reads panel windows), as the train stage
    fits it: (model, seconds, the inputs it was fit on). `report` is the fitting loop's StepReport
    (tuning prunes through it); `bars` gives the adjusted bars whose channels a model that reads
    raw bars (model.params.inputs = bars/both) sees beside the features, called only for such a model."""
    model = new_model(recipe, reporter)
    if model.needs_bars() and bars is None:
        raise RecipeError(f"model.params.inputs = {model.params.get('inputs')!r} reads raw bars; pass the bars to fit it")
    if inputs is None or model.uses_panel():
        channels = bar_channels(bars(), recipe["features"]["timeframes"]) if model.needs_bars() and bars is not None else None
        inputs = fitting.segment_inputs(model, prepared, ("train", "val"), channels)
    return model, _fit(model, prepared, inputs, recipe["train"]["early_stopping"], reporter, report), inputs


def _bar_channels(model: Model, recipe: Recipe, prepared: Prepared, snapshot: store.Snapshot | None) -> pl.DataFrame | None:
    """Raw-bar channels for a model that reads them (model.params.inputs = bars/both), from the
    pinned snapshot with the run's price adjustment."""
    if not model.needs_bars():
        return None
    bars = prepared.pipeline.adjustment.apply(load_bars(recipe, snapshot))
    return bar_channels(bars, recipe["features"]["timeframes"])


def _train_stage(run: Run, recipe: Recipe, prepared: Prepared, reporter: Reporter, resume: bool = False,
                 snapshot: store.Snapshot | None = None) -> dict[str, Any]:
    with run.stage("train") as info:
        metrics: dict[str, Any] = {}
        device = _device(recipe, reporter)
        if recipe["split"]["method"] != "chronological":
            metrics["cv"] = _cv_stage(run, recipe, prepared, device, reporter)
        model = _new_model(recipe, device, reporter)
        model.set_checkpoints(run.path / CHECKPOINTS, resume)  # per-epoch last/best of torch models
        channels = _bar_channels(model, recipe, prepared, snapshot)
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
        metrics["train"] = {"seconds": round(seconds, 3), "rows": train.height, "symbols": train["symbol"].n_unique(),
                            "model": model.name, **model.fit_info()}
        write_json_atomic(run.path / "metrics.json", metrics)
        used = model.fit_info().get("device", "cpu")
        info.update(model=model.name, device=used, seconds_fit=round(seconds, 3))
    run.update_manifest(device=used)
    reporter.info(f"train: {model.name} on {train.height:,} rows; val IC {metrics['val'].get('ic', float('nan')):.4f}{' (in-sample)' if metrics['val'].get('in_sample') else ''}, test IC {metrics['test'].get('ic', float('nan')):.4f}")
    return metrics


def _cv_stage(run: Run, recipe: Recipe, prepared: Prepared, device: str, reporter: Reporter) -> dict[str, Any]:
    oof, summary = cross_validate(prepared, recipe["split"], _embargo(recipe), lambda: _new_model(recipe, device, reporter), reporter)
    with stage_outputs(run, "cv") as folder:
        write_parquet_atomic(folder / "oof.parquet", oof)
        write_json_atomic(folder / "summary.json", summary)
    reporter.info(f"cv: {summary['folds']['n_splits']} splits, {summary['folds']['n_paths']} path(s); IC {summary['ic_mean']:.4f} ± {summary['ic_std']:.4f}")
    return {k: v for k, v in summary.items() if k != "folds"} | {"n_splits": summary["folds"]["n_splits"], "n_paths": summary["folds"]["n_paths"]}


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


def _backtest_stage(run: Run, recipe: Recipe, snapshot: store.Snapshot, reporter: Reporter) -> dict[str, Any]:
    if not (run.path / "predictions.parquet").is_file():
        raise RunError(f"run {run.id} has no predictions.parquet; train it first with `qfactory train --run {run.id}`")
    cfg = recipe["backtest"]
    with run.stage("backtest") as info:
        scores = read_run_parquet(run.path, "predictions.parquet").filter(pl.col("segment") == cfg["segment"])
        if scores.height == 0:
            raise RunError(f"run {run.id} has no {cfg['segment']} predictions to backtest; set backtest.segment to a segment the split has rows in")
        bars = _adjustment(run).apply(load_bars(recipe, snapshot))  # the prices the labels were measured on
        summary = _write_backtest(run, "score", scores, bars, recipe, snapshot, reporter)
        info["periods"] = summary["periods"]
    _report_backtest(summary, reporter)
    return summary


def _write_backtest(run: Run, kind: str, signal: pl.DataFrame, bars: pl.DataFrame, recipe: Recipe,
                    snapshot: store.Snapshot, reporter: Reporter) -> dict[str, Any]:
    """backtest/ (write_backtest) and the backtest block of the run's metrics.json."""
    cfg = recipe["backtest"]
    segment = cfg["segment"] if kind == "score" else "weights"  # the ledger counts only test-segment model runs
    with reporter.working("backtest: next-bar execution with costs"), stage_outputs(run, "backtest") as folder:
        summary = write_backtest(folder, signal, bars, cfg, extra={"segment": segment}, kind=kind, run_dir=run.path,
                                 frequency=recipe["data"]["frequency"] or snapshot.manifest.get("frequency"), reporter=reporter)
    if segment == "test" and math.isfinite(summary.get("sharpe", math.nan)):
        summary.update(_deflated(run, summary))
    path = run.path / "metrics.json"
    metrics = read_run_json(run.path, "metrics.json") if path.is_file() else {}
    metrics["backtest"] = {k: v for k, v in summary.items() if k != "config"}
    write_json_atomic(path, metrics)
    return summary


def _deflated(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """deflated_sharpe and n_trials of this backtest against the test-segment trials on its
    dataset so far (runs/ledger.py), this one included."""
    manifest = run.manifest()
    dataset = str((manifest.get("dataset") or {}).get("name"))
    trial = Trial(run_id=str(manifest.get("run_id", run.id)), dataset=dataset, kind="backtest", created=str(manifest.get("created", "")),
                  sharpe=summary["sharpe"], periods=summary["periods"], periods_per_year=summary["periods_per_year"],
                  skew=summary.get("skew", math.nan), kurtosis=summary.get("kurtosis", math.nan))
    result = deflated_among_runs(trial, run.path.parent)
    return {"deflated_sharpe": result["deflated_sharpe"], "n_trials": result["n_trials"]}


def _report_backtest(summary: dict[str, Any], reporter: Reporter) -> None:
    before = summary.get("before_costs", {})
    reporter.info(f"backtest: sharpe {summary.get('sharpe', float('nan')):.2f} ({before.get('sharpe', float('nan')):.2f} before costs), "
                  f"annual return {summary.get('annual_return', float('nan')):.2%}, max drawdown {summary.get('max_drawdown', float('nan')):.2%}, "
                  f"{summary.get('periods_per_year', float('nan')):.0f} periods/year ({summary.get('periods_per_year_source')})"
                  + (f"; deflated Sharpe {summary['deflated_sharpe']:.2f} over {summary['n_trials']} trial(s)" if "n_trials" in summary else ""))


def backtest_weights(recipe: Recipe, weights_file: Path, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> Run:
    """`qfactory backtest --weights FILE --recipe R`: a new run that backtests given target weights
    (symbol, ts, weight; another tool's signal) on the recipe's dataset with its [backtest] settings."""
    _check(recipe, reporter, model=False)
    weights = read_weights(weights_file)
    snapshot = _pin(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        run.update_manifest(dataset=_dataset_record(snapshot))
        with run.stage("backtest") as info:
            raw = load_bars(recipe, snapshot)
            adjustment = adjust.resolve(recipe["data"]["adjust"], raw, reporter)
            run.update_manifest(adjust=adjustment.to_json())
            summary = _write_backtest(run, "weight", weights, adjustment.apply(raw), recipe, snapshot, reporter)
            info["periods"] = summary["periods"]
    _report_backtest(summary, reporter)
    return run


def _adjustment(run: Run) -> Adjustment:
    path = run.path / "split" / "pipeline.json"
    if not path.is_file():
        return Adjustment()
    return FittedPipeline.from_json(read_run_json(run.path, "split/pipeline.json")).adjustment


def _ingest_stage(run: Run, recipe: Recipe, data_dir: Path, reporter: Reporter) -> None:
    from quant_cli.data.ingest import ingest, request_from_recipe

    with run.stage("ingest") as info, reporter.working("ingest: reading and validating bars"):
        manifest = ingest(request_from_recipe(recipe), data_dir, reporter)
        info.update(dataset=manifest["dataset"], rows=manifest["rows"], content_hash=manifest["content_hash"])


def _check(recipe: Recipe, reporter: Reporter, model: bool = True) -> None:
    """Cheap recipe checks that must fail before a run directory or any heavy work exists."""
    dataset_name(recipe)
    check_task(recipe)
    if model:
        _check_sequence_split(recipe, _new_model(recipe, _device(recipe, reporter), reporter))


def _check_sequence_split(recipe: Recipe, model: Model) -> None:
    """Cross-validation refits the preprocessing per fold on the fold's rows alone, but a window
    reads the whole panel, preprocessed once: a sequence model is validated chronologically."""
    if model.uses_panel() and recipe["split"]["method"] != "chronological":
        raise RecipeError(
            f"split.method {recipe['split']['method']!r} is not supported with sequence model '{model.name}' "
            "(windows read every past row, which per-fold preprocessing cannot provide); use split.method = \"chronological\""
        )


def _pin_checked(recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> store.Snapshot:
    """Pin the dataset, then check the split dates against the pinned manifest (before any feature build)."""
    snapshot = _pin(recipe, data_dir, reporter)
    _check_split_dates(recipe, snapshot.manifest)
    return snapshot


def _check_split_dates(recipe: Recipe, manifest: dict[str, Any]) -> None:
    """Explicit split dates inside the data the recipe selects, from the pinned manifest alone."""
    cfg, data = recipe["split"], recipe["data"]
    if not (cfg["val_start"] or cfg["test_start"]) or not manifest.get("start"):
        return
    val_start, test_start = explicit_boundaries(cfg)
    first = max(b for b in (store.parse_time(manifest["start"], "start"), _bound(data["start"], "data.start")) if b)
    last = min(b for b in (store.parse_time(manifest["end"], "end"), _bound(data["end"], "data.end")) if b)
    for key, value in (("split.val_start", val_start), ("split.test_start", test_start)):
        if not first < value <= last:
            raise RecipeError(
                f"{key} {value:%Y-%m-%d} is outside the data: dataset {manifest['dataset']!r} (with data.start/data.end) "
                f"spans {first:%Y-%m-%d} to {last:%Y-%m-%d}; pick a date inside that range"
            )


def _bound(value: Any, name: str) -> Any:
    return store.parse_time(value, name) if value else None


def _pin(recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> store.Snapshot:
    """The one dataset version a command reads, pinned when it starts; a dataset not in the store yet
    is first ingested from the recipe's data.source when it names one (a recipe is its own first command)."""
    from quant_cli.data.ingest import ingest_missing

    ingest_missing(recipe, data_dir, reporter)
    return store.pin(data_dir, dataset_name(recipe))


def _pinned_for(run: Run, recipe: Recipe, data_dir: Path) -> store.Snapshot:
    """The version a run was split on; a store that cannot time travel must still hold the same content."""
    recorded = run.manifest().get("dataset") or {}
    snapshot = store.pin(data_dir, dataset_name(recipe), recorded.get("version"))
    if recorded.get("content_hash") and snapshot.content_hash != recorded["content_hash"]:
        raise RunError(
            f"run {run.id} was split on dataset {snapshot.dataset!r} version {recorded.get('version')} (content {recorded['content_hash'][:12]}), "
            f"which the store no longer holds (now {snapshot.content_hash[:12]}); start a new run with `qfactory train --recipe R`"
        )
    return snapshot


def new_split_run(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> Run:
    """`qfactory split --recipe R`: a new run holding only the split. Its recipe is fixed, so the
    model is checked too: a run that `train --run` could never train is not made."""
    return split_new(recipe, data_dir, runs_dir, reporter, model=True)[0]


def split_new(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT, *, model: bool = False) -> tuple[Run, Prepared]:
    """A new (committed) run holding only the split, and the split in memory (tuning shares it
    with every trial); `model` checks the recipe's model before any heavy work."""
    _check(recipe, reporter, model=model)
    snapshot = _pin_checked(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        prepared = _split_stage(run, recipe, snapshot, reporter)
    return run, prepared


def load_run_split(run: Run, data_dir: Path) -> Prepared:
    """A run's stored split on the dataset version it was split on (nothing is recomputed)."""
    recipe = run.recipe()
    return load_split(run.path / "split", recipe, _pinned_for(run, recipe, data_dir))


def train_new(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> Run:
    """`qfactory train --recipe R`: a new run with features (cached), split and a trained model."""
    _check(recipe, reporter)
    snapshot = _pin_checked(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        _train_stage(run, recipe, _split_stage(run, recipe, snapshot, reporter), reporter, snapshot=snapshot)
    return run


def train_existing(run: Run, data_dir: Path, reporter: Reporter = SILENT, resume: bool = False) -> Run:
    """`qfactory train --run RUN`: train a run that so far holds only a split, from its stored
    split and cached features (nothing is recomputed). `resume` continues a killed torch fit from
    its last per-epoch checkpoint; without it a fit starts afresh."""
    run.begin_stage("train", reporter)  # refuses a committed train; clears a killed one's leftovers
    _checkpoints_for(run, resume)
    recipe = run.recipe()
    snapshot = _pinned_for(run, recipe, data_dir)
    _check(recipe, reporter)
    _train_stage(run, recipe, load_split(run.path / "split", recipe, snapshot), reporter, resume, snapshot)
    return run


def _checkpoints_for(run: Run, resume: bool) -> None:
    folder = run.path / CHECKPOINTS
    if resume and not (folder / "last.pt").is_file():
        raise RunError(f"run {run.id} has no checkpoint to resume ({CHECKPOINTS}/last.pt is missing: only torch models "
                       f"write one, after each epoch); train it afresh with `qfactory train --run {run.id}`")
    if not resume and folder.exists():
        shutil.rmtree(folder)  # a fresh fit: a killed fit's checkpoints must not be mistaken for this one's


def backtest_existing(run: Run, data_dir: Path, reporter: Reporter = SILENT) -> Run:
    """`qfactory backtest --run RUN`: on the dataset version the run was split on."""
    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    run.begin_stage("backtest", reporter)
    recipe = run.recipe()
    _backtest_stage(run, recipe, _pinned_for(run, recipe, data_dir), reporter)
    return run


def report_existing(run: Run) -> list[Path]:
    """`qfactory report --run RUN`: regenerate report.html of backtest/ and walkforward/backtest/."""
    written = render_run_reports(run.path)
    if not written:
        raise RunError(f"run {run.id} has no backtest to report; backtest it first with `qfactory backtest --run {run.id}`")
    return written


def bundle_existing(run: Run, data_dir: Path, out: Path | None = None, archive: bool = False, trust_pickle: bool = False,
                    reporter: Reporter = SILENT) -> Path:
    """`qfactory bundle --run RUN`: the run's verified inference bundle (serve/bundle.py), by default
    as the run's `bundle` stage (`<run>/bundle/`, plus `bundle.tar.gz` with `archive`), else at `out`."""
    from quant_cli.serve import bundle as bundles

    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    recipe = run.recipe()
    bars = _bundle_bars(recipe, _pinned_for(run, recipe, data_dir))
    if out is not None:
        if out.exists():
            raise RunError(f"--out {out} already exists; bundles are never overwritten — pass a new folder")
        with staged_dir(out) as folder:
            bundles.build(run, bars, folder, trust_pickle, reporter)
        return bundles.write_archive(out, out.with_name(f"{out.name}.tar.gz")) if archive else out
    run.begin_stage("bundle", reporter)  # a killed bundle's leftovers never block
    with run.stage("bundle") as info:
        with stage_outputs(run, "bundle") as folder:
            info["bundle_id"] = bundles.build(run, bars, folder, trust_pickle, reporter)["bundle_id"]
        if archive:
            bundles.write_archive(run.path / "bundle", run.path / "bundle.tar.gz")
    return run.path / ("bundle.tar.gz" if archive else "bundle")


def _bundle_bars(recipe: Recipe, snapshot: store.Snapshot) -> pl.DataFrame:
    """The run's raw bars, with the benchmark's even when data.symbols leaves it out."""
    bars = load_bars(recipe, snapshot)
    benchmark = recipe["features"].get("benchmark")
    if benchmark and benchmark not in set(bars["symbol"].cast(pl.String).unique().to_list()):
        extra = snapshot.load_bars(symbols=[benchmark], end=recipe["data"]["end"])
        bars = pl.concat([bars, extra], how="diagonal_relaxed")
    return bars


def run_all(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> Run:
    """`qfactory run --recipe R`: every configured stage in one new run (for cron)."""
    _check(recipe, reporter)
    if not recipe["data"]["source"]:
        _pin_checked(recipe, data_dir)  # split dates fail before a run exists; after an ingest, below
    with create_run(runs_dir, recipe) as run:
        if recipe["data"]["source"]:
            _ingest_stage(run, recipe, data_dir, reporter)
        snapshot = _pin_checked(recipe, data_dir)
        prepared = _split_stage(run, recipe, snapshot, reporter)
        _train_stage(run, recipe, prepared, reporter, snapshot=snapshot)
        _backtest_stage(run, recipe, snapshot, reporter)
    return run
