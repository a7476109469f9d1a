"""Stage orchestration over run directories: split → train → backtest, and `run` for all of them.

Each public function here is what one CLI command calls. A new run is staged and appears only if
every requested stage succeeds; continuing a run (`--run`) adds its outputs atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli import console
from quant_cli.backtest.engine import run_backtest
from quant_cli.data import store
from quant_cli.data.frequency import periods_per_year
from quant_cli.errors import RecipeError, RunError
from quant_cli.features.store import feature_table
from quant_cli.io import read_json, write_json_atomic, write_parquet_atomic
from quant_cli.labels import make_labels
from quant_cli.metrics import prediction_metrics
from quant_cli.models.registry import create_model
from quant_cli.preprocess import apply_fill, apply_scaler, fit_scaler
from quant_cli.recipe import Recipe
from quant_cli.runs import Run, create_run, stage_outputs
from quant_cli.split import SplitPlan, assign_segments, plan_split, segment_counts

KEYS = ["symbol", "ts"]


@dataclass
class Prepared:
    """The modelling table: keys, t1, label, segment and preprocessed features."""

    frame: pl.DataFrame
    features: list[str]
    plan: SplitPlan
    scaler: dict[str, Any]
    fingerprint: str


def _dataset(recipe: Recipe) -> str:
    name = recipe["data"]["dataset"]
    if not name:
        raise RecipeError("data.dataset is not set; add `dataset = \"NAME\"` under [data] or pass --set data.dataset=NAME")
    return name


def _labelled(recipe: Recipe, data_dir: Path) -> tuple[pl.DataFrame, list[str], str]:
    """Features joined with labels; labels never use bars after data.end."""
    table = feature_table(recipe, data_dir)
    data = recipe["data"]
    bars = store.load_bars(data_dir, _dataset(recipe), symbols=data["symbols"] or None, end=data["end"])
    labels = make_labels(bars, recipe["label"], recipe["backtest"]["execution"])
    frame = table.frame.join(labels, on=KEYS, how="inner").sort(KEYS)
    return frame, table.columns, table.fingerprint


def prepare(recipe: Recipe, data_dir: Path, plan: SplitPlan | None = None, scaler: dict | None = None) -> tuple[Prepared, dict]:
    """Build the modelling table; fit the plan and scaler unless stored ones are given."""
    frame, features, fp = _labelled(recipe, data_dir)
    if frame.height == 0:
        raise RunError(f"no labelled rows in dataset {_dataset(recipe)!r} for the recipe's symbols and dates; widen data.start/data.end")
    plan = plan or plan_split(frame["ts"], recipe["split"], recipe["label"]["horizon"])
    frame, dropped = assign_segments(frame, plan)
    frame = apply_fill(frame, features, recipe["preprocess"]["fill"]) if recipe["preprocess"]["fill"] == "drop" else frame
    if scaler is None:
        scaler = fit_scaler(frame.filter(pl.col("segment") == "train"), features, recipe["preprocess"]["scaler"])
    frame = apply_scaler(frame, scaler)
    frame = apply_fill(frame, features, recipe["preprocess"]["fill"])
    return Prepared(frame, features, plan, scaler, fp), dropped


def _write_split(run: Run, recipe: Recipe, prepared: Prepared, dropped: dict, data_dir: Path) -> None:
    counts = segment_counts(prepared.frame)
    with stage_outputs(run, "split") as folder:
        write_json_atomic(folder / "boundaries.json", {
            **prepared.plan.to_json(), "method": recipe["split"]["method"], "horizon": recipe["label"]["horizon"],
            "execution": recipe["backtest"]["execution"], "dropped": dropped,
            "segments": {seg: {k: v for k, v in c.items() if k != "rows_per_symbol"} for seg, c in counts.items()},
        })
        write_json_atomic(folder / "counts.json", counts)
        write_json_atomic(folder / "scaler.json", prepared.scaler)
        write_json_atomic(folder / "features.json", {"fingerprint": prepared.fingerprint, "features": prepared.features})
    run.update_manifest(fingerprints={"features": prepared.fingerprint, "dataset": store.read_manifest(data_dir, _dataset(recipe))["content_hash"]})
    summary = ", ".join(f"{seg} {c['rows']:,}" for seg, c in counts.items())
    console.info(f"split: {summary} rows; purged {sum(dropped['purged'].values()):,}, embargoed {sum(dropped['embargoed'].values()):,}")


def _split_stage(run: Run, recipe: Recipe, data_dir: Path) -> Prepared:
    with run.stage("split") as info:
        prepared, dropped = prepare(recipe, data_dir)
        _write_split(run, recipe, prepared, dropped, data_dir)
        info["rows"] = prepared.frame.height
    return prepared


def load_prepared(run: Run, recipe: Recipe, data_dir: Path) -> Prepared:
    """Rebuild the modelling table of a run from its stored split (same boundaries, same scaler)."""
    if not (run.path / "split").is_dir():
        raise RunError(f"run {run.id} has no split/; create one with `qfactory split --recipe R` or use `qfactory train --recipe R`")
    stored = read_json(run.path / "split" / "features.json")
    plan = SplitPlan.from_json(read_json(run.path / "split" / "boundaries.json"))
    prepared, _ = prepare(recipe, data_dir, plan=plan, scaler=read_json(run.path / "split" / "scaler.json"))
    if prepared.fingerprint != stored["fingerprint"]:
        raise RunError(
            f"run {run.id}: the dataset or feature code changed since its split (features {stored['fingerprint']} → "
            f"{prepared.fingerprint}); start a new run with `qfactory train --recipe R`"
        )
    return prepared


def _xy(prepared: Prepared, segment: str) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    part = prepared.frame.filter(pl.col("segment") == segment)
    X = part.select(prepared.features).to_numpy().astype(np.float64, copy=False)
    return part, X, part["label"].to_numpy()


def _new_model(recipe: Recipe):
    """Constructing validates the model name and parameters, so call it before any heavy work."""
    cfg = recipe["model"]
    return create_model(cfg["name"], cfg["task"], cfg["params"], recipe["run"]["seed"], recipe["train"]["threads"])


def _train_stage(run: Run, recipe: Recipe, prepared: Prepared) -> dict[str, Any]:
    train_cfg = recipe["train"]
    with run.stage("train") as info:
        model = _new_model(recipe)
        train_part, X, y = _xy(prepared, "train")
        _, X_val, y_val = _xy(prepared, "val")
        started = time.perf_counter()
        model.fit(X, y, feature_names=prepared.features, X_val=X_val, y_val=y_val, early_stopping=train_cfg["early_stopping"])
        seconds = time.perf_counter() - started
        with stage_outputs(run, "model") as folder:
            model.save(folder)
            if (importance := model.feature_importance()) is not None:
                write_json_atomic(folder / "feature_importance.json", importance)
        predictions = _predict_segments(model, prepared)
        write_parquet_atomic(run.path / "predictions.parquet", predictions)
        metrics = _segment_metrics(predictions)
        metrics["train"] = {"seconds": round(seconds, 3), "rows": train_part.height, "symbols": train_part["symbol"].n_unique(),
                            "model": model.name, **model.fit_info()}
        write_json_atomic(run.path / "metrics.json", metrics)
        info.update(model=model.name, device="cpu", seconds_fit=round(seconds, 3))
    run.update_manifest(device="cpu")
    console.info(f"train: {model.name} on {train_part.height:,} rows; val IC {metrics['val'].get('ic', float('nan')):.4f}, test IC {metrics['test'].get('ic', float('nan')):.4f}")
    return metrics


def _predict_segments(model, prepared: Prepared) -> pl.DataFrame:
    frames = []
    for segment in ("val", "test"):
        part, X, _ = _xy(prepared, segment)
        if part.height:
            frames.append(part.select(*KEYS, "segment", pl.Series("score", model.predict(X)), "label"))
    return pl.concat(frames) if frames else pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "segment": pl.String, "score": pl.Float64, "label": pl.Float64})


def _segment_metrics(predictions: pl.DataFrame) -> dict[str, Any]:
    return {seg: prediction_metrics(predictions.filter(pl.col("segment") == seg)) for seg in ("val", "test")}


def _backtest_stage(run: Run, recipe: Recipe, data_dir: Path) -> dict[str, Any]:
    if not (run.path / "predictions.parquet").is_file():
        raise RunError(f"run {run.id} has no predictions.parquet; train it first with `qfactory train --run {run.id}`")
    cfg, data = recipe["backtest"], recipe["data"]
    with run.stage("backtest") as info:
        scores = pl.read_parquet(run.path / "predictions.parquet").filter(pl.col("segment") == cfg["segment"])
        bars = store.load_bars(data_dir, _dataset(recipe), symbols=data["symbols"] or None, end=data["end"])
        ppy = periods_per_year(data["frequency"] or store.read_manifest(data_dir, _dataset(recipe))["frequency"])
        curve, summary = run_backtest(scores, bars, cfg, ppy)
        with stage_outputs(run, "backtest") as folder:
            write_parquet_atomic(folder / "equity.parquet", curve)
            write_json_atomic(folder / "summary.json", {**summary, "config": cfg})
        metrics = read_json(run.path / "metrics.json")
        metrics["backtest"] = summary
        write_json_atomic(run.path / "metrics.json", metrics)
        info["periods"] = summary["periods"]
    console.info(f"backtest: sharpe {summary.get('sharpe', float('nan')):.2f}, annual return {summary.get('annual_return', float('nan')):.2%}, max drawdown {summary.get('max_drawdown', float('nan')):.2%}")
    return summary


def _ingest_stage(run: Run, recipe: Recipe, data_dir: Path) -> None:
    from quant_cli.data.ingest import ingest, request_from_recipe

    with run.stage("ingest") as info:
        manifest = ingest(request_from_recipe(recipe), data_dir)
        info.update(dataset=manifest["dataset"], rows=manifest["rows"], content_hash=manifest["content_hash"])


def new_split_run(recipe: Recipe, data_dir: Path, runs_dir: Path) -> Run:
    """`qfactory split --recipe R`: a new run holding only the split."""
    _dataset(recipe)
    with create_run(runs_dir, recipe) as run:
        _split_stage(run, recipe, data_dir)
    return run


def train_new(recipe: Recipe, data_dir: Path, runs_dir: Path) -> Run:
    """`qfactory train --recipe R`: a new run with features (cached), split and a trained model."""
    _dataset(recipe)
    _new_model(recipe)
    with create_run(runs_dir, recipe) as run:
        prepared = _split_stage(run, recipe, data_dir)
        _train_stage(run, recipe, prepared)
    return run


def train_existing(run: Run, data_dir: Path) -> Run:
    """`qfactory train --run RUN`: train a run that so far holds only a split."""
    if (run.path / "model").exists():
        raise RunError(f"run {run.id} already has a model; runs are never overwritten — start a new one with `qfactory train --recipe R`")
    recipe = run.recipe()
    _train_stage(run, recipe, load_prepared(run, recipe, data_dir))
    return run


def backtest_existing(run: Run, data_dir: Path) -> Run:
    """`qfactory backtest --run RUN`."""
    _backtest_stage(run, run.recipe(), data_dir)
    return run


def run_all(recipe: Recipe, data_dir: Path, runs_dir: Path) -> Run:
    """`qfactory run --recipe R`: every configured stage in one new run (for cron)."""
    _dataset(recipe)
    _new_model(recipe)
    with create_run(runs_dir, recipe) as run:
        if recipe["data"]["source"]:
            _ingest_stage(run, recipe, data_dir)
        prepared = _split_stage(run, recipe, data_dir)
        _train_stage(run, recipe, prepared)
        _backtest_stage(run, recipe, data_dir)
    return run
