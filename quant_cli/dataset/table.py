"""The modelling table of a run, in three separate steps:

1. `build_table`: raw features (from the feature store) and labels with `t1` for EVERY feature
   row — nothing is dropped; rows without a label carry nulls.
2. `split_rows`: the split plan marks each row's `segment` and, where it neither trains nor is
   scored, why (`excluded`: unlabelled, purged, embargoed, incomplete); training rows get their
   sample weights. Excluded rows stay: sequence windows read them as past inputs.
3. `fit_pipeline`: the FittedPipeline (quant_cli.pipeline.fitted) fit on the kept training rows.

`prepare` runs all three. The split stage stores the result in `split/` (rows.parquet with the
segments and weights, pipeline.json, boundaries.json) and `load_split` reads it back with the
run's cached feature version, so continuing a run recomputes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data.store import Snapshot
from quant_cli.dataset.labels import forward_path, is_classification, make_labels
from quant_cli.dataset.weights import sample_weights
from quant_cli.errors import RecipeError, RunError
from quant_cli.features.align import FeatureOptions
from quant_cli.features.regime import HMM_FEATURE
from quant_cli.features.store import feature_table, features_root, intact_parts, scan_version
from quant_cli.io import read_run_json, read_run_parquet, write_json_atomic, write_parquet_atomic
from quant_cli.pipeline import adjust
from quant_cli.pipeline.fitted import MODEL_DTYPE, FittedPipeline
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.splits.chronological import EXCLUDED, SplitPlan, drop_counts, mark_segments, plan_split

_SLICE_ROWS = 100_000  # rows transformed at once when building model inputs
KEYS = ["symbol", "ts"]
ROW_COLUMNS = [*KEYS, "label", "t1"]


@dataclass
class Table:
    """Labels (symbol, ts, label, t1) of every feature row, and the feature version they join."""

    rows: pl.DataFrame
    features: list[str]
    fingerprint: str
    version_path: Path

    def scan_features(self) -> pl.LazyFrame:
        return scan_version(self.version_path).select(*KEYS, pl.col(self.features).cast(MODEL_DTYPE))

    def scan_parts(self) -> list[pl.LazyFrame]:
        """The feature table part by part (each a group of symbols), features as Float32."""
        parts = intact_parts(self.version_path)
        return [pl.scan_parquet(p).select(*KEYS, pl.col(self.features).cast(MODEL_DTYPE)) for p in parts]

    def with_features(self, keys: pl.DataFrame) -> pl.DataFrame:
        """`keys`' columns plus the raw features (Float32) of those rows, in `keys`' order."""
        return keys.lazy().join(self.scan_features(), on=KEYS, how="left", maintain_order="left").collect()

    def regime_history(self, pipeline: FittedPipeline) -> pl.DataFrame | None:
        """symbol, ts and the pipeline's filtered regime probability (HMM_FEATURE) of EVERY row of the
        table, the filter run over each symbol's whole history; None when the pipeline fits no regime.
        Rows picked from it (a segment, a fold) carry the values serving computes from the same bars."""
        if not pipeline.fits_regime:
            return None
        parts = [
            pipeline.with_regime(pl.scan_parquet(p).select(*KEYS, pl.col(HMM_FEATURE).cast(pl.Float64)).collect())
            for p in intact_parts(self.version_path)
        ]  # float64 returns, as the engine hands them to serving
        return pl.concat(parts)


def with_regime_of(history: pl.DataFrame | None, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` (symbol, ts, raw features) with HMM_FEATURE taken from `history` (Table.regime_history)."""
    if history is None:
        return rows
    values = rows.select(KEYS).join(history, on=KEYS, how="left", maintain_order="left").get_column(HMM_FEATURE)
    return rows.with_columns(values.cast(rows.schema[HMM_FEATURE]))


@dataclass
class Prepared:
    """A run's split, ready to model: marked rows (+ weight), the plan and the fitted pipeline."""

    table: Table
    rows: pl.DataFrame  # symbol, ts, label, t1, segment, excluded, weight — every row
    plan: SplitPlan
    pipeline: FittedPipeline
    calendar: pl.DataFrame | None = None  # symbol, ts of every bar (cross-validation refits weights)

    @property
    def features(self) -> list[str]:
        return self.pipeline.features

    @property
    def fingerprint(self) -> str:
        return self.table.fingerprint

    @property
    def state(self) -> dict[str, Any] | None:
        return self.pipeline.state

    @property
    def kept(self) -> pl.DataFrame:
        return self.rows.filter(pl.col(EXCLUDED).is_null())

    def segment(self, name: str) -> pl.DataFrame:
        """Kept rows of one segment (symbol, ts, label, t1, segment, weight), by (symbol, ts)."""
        return self.kept.filter(pl.col("segment") == name).drop(EXCLUDED)

    def inputs(self, part: pl.DataFrame) -> np.ndarray:
        """Model inputs (float32) of `part`'s rows through the fitted pipeline."""
        keys = part.select(KEYS).with_row_index("_row")
        out = np.full((keys.height, len(self.features)), np.nan, dtype=np.float32)
        history = self.table.regime_history(self.pipeline)
        for scan in self.table.scan_parts():  # one feature part (a group of symbols) in memory at a time
            chunk = with_regime_of(history, scan.join(keys.lazy(), on=KEYS, how="inner").collect())
            for start in range(0, chunk.height, _SLICE_ROWS):  # transform copies: bound them to a slice
                piece = chunk.slice(start, _SLICE_ROWS)
                out[piece["_row"].to_numpy()] = self.pipeline.model_matrix(piece)
        return out

    def segment_inputs(
        self, names: tuple[str, ...] = ("train", "val", "test")
    ) -> dict[str, tuple[pl.DataFrame, np.ndarray]]:
        """(rows, model inputs) per segment from ONE pass over the feature table: the matrix holds the
        segments one after another, so each segment's inputs are a view, not a copy."""
        parts = [self.segment(name) for name in names]
        X = self.inputs(pl.concat([p.select(KEYS) for p in parts]))
        bounds = np.cumsum([0, *(p.height for p in parts)])
        return {name: (part, X[bounds[i] : bounds[i + 1]]) for i, (name, part) in enumerate(zip(names, parts))}

    def dropped(self) -> dict[str, Any]:
        return drop_counts(self.rows)


def dataset_name(recipe: Recipe) -> str:
    name = recipe["data"]["dataset"]
    if not name:
        raise RecipeError(
            'data.dataset is not set; add `dataset = "NAME"` under [data] or pass --set data.dataset=NAME'
        )
    return name


def check_task(recipe: Recipe) -> None:
    if recipe["model"]["task"] == "classification" and not is_classification(recipe["label"]):
        raise RecipeError(
            "model.task = 'classification' needs label.kind 'direction' or 'triple_barrier', "
            f"got {recipe['label']['kind']!r}"
        )


def load_bars(recipe: Recipe, snapshot: Snapshot) -> pl.DataFrame:
    """The recipe's raw bars up to data.end from the pinned snapshot: labels and backtests never read past it."""
    return snapshot.load_bars(symbols=recipe["data"]["symbols"] or None, end=recipe["data"]["end"])


def build_table(
    recipe: Recipe, snapshot: Snapshot, reporter: Reporter = SILENT, path: bool = False
) -> tuple[Table, pl.DataFrame, adjust.Adjustment]:
    """(table, adjusted bars, adjustment): features on adjusted bars from the store, labels on the same bars.
    `path`: the recipe's model forecasts a path (the caller asks the registry), so the rows also carry
    its targets, the label's one-bar returns (quant_cli.dataset.labels.forward_path)."""
    raw = load_bars(recipe, snapshot)
    adjustment = adjust.resolve(recipe["data"]["adjust"], raw, reporter)
    bars = adjustment.apply(raw)
    del raw
    features = feature_table(
        recipe, snapshot.data_dir, reporter=reporter, snapshot=adjust.AdjustedSnapshot(snapshot, adjustment)
    )
    labels = make_labels(bars, recipe["label"], recipe["backtest"]["execution"])
    columns = ROW_COLUMNS
    if path:
        path = forward_path(bars, recipe["label"]["horizon"], recipe["backtest"]["execution"]).drop("path_end")
        labels, columns = labels.join(path, on=KEYS, how="left"), [*ROW_COLUMNS, "path"]
    keys = features.scan().select(KEYS).collect()
    rows = keys.join(labels, on=KEYS, how="left").sort(KEYS).select(columns)
    if rows["label"].null_count() == rows.height:
        raise RunError(
            f"no labelled rows in dataset {snapshot.dataset!r} for the recipe's symbols and dates; "
            "widen data.start/data.end"
        )
    return Table(rows, list(features.columns), features.fingerprint, features.path), bars, adjustment


def split_rows(
    table: Table, recipe: Recipe, calendar: pl.DataFrame, plan: SplitPlan | None = None
) -> tuple[pl.DataFrame, SplitPlan]:
    """Every row with segment, excluded and (training rows) weight; the plan from the labelled rows."""
    labelled = table.rows.filter(pl.col("label").is_not_null())
    plan = plan or plan_split(labelled["ts"], recipe["split"], recipe["label"]["horizon"])
    rows = mark_segments(table.rows, plan)
    if recipe["preprocess"]["fill"] == "drop":  # rows with a missing feature, in every segment alike
        incomplete = (
            table.scan_features()
            .filter(pl.any_horizontal(pl.col(table.features).is_null()))
            .select(*KEYS, pl.lit(True).alias("_incomplete"))
            .collect()
        )
        rows = rows.join(incomplete, on=KEYS, how="left", maintain_order="left")
        flag = pl.col(EXCLUDED).is_null() & pl.col("_incomplete").fill_null(False)
        rows = rows.with_columns(
            pl.when(flag).then(pl.lit("incomplete")).otherwise(pl.col(EXCLUDED)).alias(EXCLUDED)
        ).drop("_incomplete")
    train = rows.filter(pl.col(EXCLUDED).is_null() & (pl.col("segment") == "train"))
    weights = fit_weights(train, calendar, recipe["split"])
    weight = pl.lit(None, pl.Float64).alias("weight")
    rows = (
        rows.join(weights, on=KEYS, how="left", maintain_order="left")
        if weights is not None
        else rows.with_columns(weight)
    )
    return rows, plan


def fit_weights(rows: pl.DataFrame, calendar: pl.DataFrame, cfg: dict[str, Any]) -> pl.DataFrame | None:
    """symbol, ts, weight for `rows` (symbol, ts, t1), fit on those rows alone; None if no weighting.

    Like a scaler, weights are fit on training rows only: concurrency, the time-decay slope and
    the mean-1 normalisation would otherwise depend on validation or test labels.
    """
    rows = rows.select("symbol", "ts", "t1")
    values = sample_weights(rows, calendar, cfg["sample_weight"], cfg["time_decay"])
    return None if values is None else rows.select(KEYS).with_columns(pl.Series("weight", values))


def new_pipeline(
    recipe: Recipe, table: Table, manifest: dict[str, Any], adjustment: adjust.Adjustment
) -> FittedPipeline:
    options = FeatureOptions.from_section(
        recipe["features"], manifest.get("dataset"), bar_spacing=manifest.get("frequency")
    )
    return FittedPipeline.from_recipe(recipe, table.features, options, adjustment, table.fingerprint)


def fit_pipeline(pipeline: FittedPipeline, table: Table, rows: pl.DataFrame) -> FittedPipeline:
    """Fit on the kept training rows only, aggregating over the feature scan (no copy of the table)."""
    train = rows.filter(pl.col(EXCLUDED).is_null() & (pl.col("segment") == "train")).select(KEYS)
    return pipeline.fit(table.scan_features().join(train.lazy(), on=KEYS, how="semi"))


def prepare(
    recipe: Recipe, snapshot: Snapshot, reporter: Reporter = SILENT, plan: SplitPlan | None = None, path: bool = False
) -> Prepared:
    """Table → split → fitted pipeline, for a new run. `plan`: a run's split boundaries to reuse
    (the audit refits a run on rewritten bars of another data home with the run's own plan)."""
    table, bars, adjustment = build_table(recipe, snapshot, reporter, path)
    calendar = bars.select(KEYS)
    del bars
    rows, plan = split_rows(table, recipe, calendar, plan)
    pipeline = fit_pipeline(new_pipeline(recipe, table, snapshot.manifest, adjustment), table, rows)
    return Prepared(table, rows, plan, pipeline, calendar)


SPLIT_FILES = ("rows.parquet", "pipeline.json", "boundaries.json", "features.json")


def write_split(folder: Path, prepared: Prepared, weighted: bool) -> None:
    """What a continued run needs to model without recomputing: rows (+ segments, weights), the
    fitted pipeline, the feature version, and the bar calendar when weights are refit per fold."""
    write_parquet_atomic(folder / "rows.parquet", prepared.rows)
    write_json_atomic(folder / "pipeline.json", prepared.pipeline.to_json())
    write_json_atomic(folder / "scaler.json", prepared.pipeline.state)  # the preprocessing state, for people
    write_json_atomic(
        folder / "features.json",
        {"fingerprint": prepared.fingerprint, "features": prepared.features, "path": str(prepared.table.version_path)},
    )
    if weighted and prepared.calendar is not None:
        write_parquet_atomic(folder / "calendar.parquet", prepared.calendar)


def load_split(split_dir: Path, recipe: Recipe, snapshot: Snapshot) -> Prepared:
    """A run's stored split with its cached feature version (rebuilt from the pinned snapshot if deleted)."""
    if not all((split_dir / name).is_file() for name in SPLIT_FILES):
        raise RunError(
            f"run {split_dir.parent.name} has no complete split/; create one with `qfactory split --recipe R` "
            "or use `qfactory train --recipe R`"
        )
    rows = read_run_parquet(split_dir.parent, "split/rows.parquet")
    pipeline = FittedPipeline.from_json(read_run_json(split_dir.parent, "split/pipeline.json"))
    expected = read_run_json(split_dir.parent, "split/features.json")["fingerprint"]
    folder = features_root(snapshot.data_dir, snapshot.dataset) / expected
    if not (folder / "spec.json").is_file():
        built = feature_table(
            recipe, snapshot.data_dir, snapshot=adjust.AdjustedSnapshot(snapshot, pipeline.adjustment)
        )
        if built.fingerprint != expected:
            raise RunError(
                f"run {split_dir.parent.name}: the dataset or feature code changed since its split "
                f"(features {expected} → "
                f"{built.fingerprint}); start a new run with `qfactory train --recipe R`"
            )
        folder = built.path
    table = Table(rows.select(ROW_COLUMNS), pipeline.features, expected, folder)
    calendar = (
        read_run_parquet(split_dir.parent, "split/calendar.parquet")
        if (split_dir / "calendar.parquet").is_file()
        else None
    )
    return Prepared(
        table, rows, SplitPlan.from_json(read_run_json(split_dir.parent, "split/boundaries.json")), pipeline, calendar
    )
