"""The modelling table of a run: features joined with labels, split, preprocessed, weighted.

Built once by the split stage (which fits the plan, the preprocessing state and the weights and
stores them in `split/`) and rebuilt identically from those stored files by later stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data import store
from quant_cli.errors import RecipeError, RunError
from quant_cli.features.store import feature_table
from quant_cli.dataset.labels import is_classification, make_labels
from quant_cli.pipeline.preprocess import drop_incomplete, fit_preprocess, transform
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.splits.chronological import SplitPlan, assign_segments, plan_split
from quant_cli.dataset.weights import sample_weights

KEYS = ["symbol", "ts"]


@dataclass
class Prepared:
    """keys, t1, label, segment, weight (training rows only) and preprocessed features.

    `calendar` (symbol, ts of every bar) lets cross-validation fit weights on each fold's rows.
    """

    frame: pl.DataFrame
    features: list[str]
    plan: SplitPlan
    state: dict[str, Any]
    fingerprint: str
    dropped: dict[str, Any]
    calendar: pl.DataFrame

    def segment(self, name: str) -> pl.DataFrame:
        return self.frame.filter(pl.col("segment") == name)

    def matrix(self, part: pl.DataFrame) -> np.ndarray:
        return part.select(self.features).to_numpy().astype(np.float64, copy=False)


def dataset_name(recipe: Recipe) -> str:
    name = recipe["data"]["dataset"]
    if not name:
        raise RecipeError("data.dataset is not set; add `dataset = \"NAME\"` under [data] or pass --set data.dataset=NAME")
    return name


def check_task(recipe: Recipe) -> None:
    if recipe["model"]["task"] == "classification" and not is_classification(recipe["label"]):
        raise RecipeError(
            f"model.task = 'classification' needs label.kind 'direction' or 'triple_barrier', got {recipe['label']['kind']!r}"
        )


def load_bars(recipe: Recipe, data_dir: Path) -> pl.DataFrame:
    """The recipe's bars up to data.end: labels and backtests never read past it."""
    data = recipe["data"]
    return store.load_bars(data_dir, dataset_name(recipe), symbols=data["symbols"] or None, end=data["end"])


def prepare(recipe: Recipe, data_dir: Path, stored: dict[str, Any] | None = None, reporter: Reporter = SILENT) -> Prepared:
    """Build the table; fit plan, preprocessing and weights unless `stored` (from split/) is given."""
    table = feature_table(recipe, data_dir, reporter=reporter)
    bars = load_bars(recipe, data_dir)
    labels = make_labels(bars, recipe["label"], recipe["backtest"]["execution"])
    frame = table.frame.join(labels, on=KEYS, how="inner").sort(KEYS)
    if frame.height == 0:
        raise RunError(f"no labelled rows in dataset {dataset_name(recipe)!r} for the recipe's symbols and dates; widen data.start/data.end")
    plan = stored["plan"] if stored else plan_split(frame["ts"], recipe["split"], recipe["label"]["horizon"])
    frame, dropped = assign_segments(frame, plan)
    frame = drop_incomplete(frame, table.columns, recipe["preprocess"]["fill"])
    state = stored["state"] if stored else fit_preprocess(frame.filter(pl.col("segment") == "train"), table.columns, recipe["preprocess"])
    frame = transform(frame, state)
    weights = stored["weights"] if stored else _weights(frame, bars, recipe["split"])
    frame = frame.join(weights, on=KEYS, how="left") if weights is not None else frame.with_columns(pl.lit(None, pl.Float64).alias("weight"))
    return Prepared(frame, table.columns, plan, state, table.fingerprint, dropped, bars.select(KEYS))


def fit_weights(rows: pl.DataFrame, calendar: pl.DataFrame, cfg: dict[str, Any]) -> pl.DataFrame | None:
    """symbol, ts, weight for `rows` (symbol, ts, t1), fit on those rows alone; None if no weighting.

    Like a scaler, weights are fit on training rows only: concurrency, the time-decay slope and
    the mean-1 normalisation would otherwise depend on validation or test labels.
    """
    rows = rows.select("symbol", "ts", "t1")
    values = sample_weights(rows, calendar, cfg["sample_weight"], cfg["time_decay"])
    return None if values is None else rows.select(KEYS).with_columns(pl.Series("weight", values))


def _weights(frame: pl.DataFrame, bars: pl.DataFrame, cfg: dict[str, Any]) -> pl.DataFrame | None:
    return fit_weights(frame.filter(pl.col("segment") == "train"), bars, cfg)


def load_prepared(run_path: Path, recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> Prepared:
    """Rebuild a run's table from its stored split (same boundaries, scaler and weights)."""
    from quant_cli.io import read_json

    split_dir = run_path / "split"
    if not split_dir.is_dir():
        raise RunError(f"run {run_path.name} has no split/; create one with `qfactory split --recipe R` or use `qfactory train --recipe R`")
    weights_path = split_dir / "weights.parquet"
    stored = {
        "plan": SplitPlan.from_json(read_json(split_dir / "boundaries.json")),
        "state": read_json(split_dir / "scaler.json"),
        "weights": pl.read_parquet(weights_path) if weights_path.is_file() else None,
    }
    prepared = prepare(recipe, data_dir, stored, reporter)
    expected = read_json(split_dir / "features.json")["fingerprint"]
    if prepared.fingerprint != expected:
        raise RunError(
            f"run {run_path.name}: the dataset or feature code changed since its split (features {expected} → "
            f"{prepared.fingerprint}); start a new run with `qfactory train --recipe R`"
        )
    return prepared
