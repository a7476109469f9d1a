"""The split stage: features, labels, purge and embargo, train-only preprocessing, written to split/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.data import store
from quant_cli.dataset.table import KEYS, Prepared, load_split, prepare, write_split
from quant_cli.io import write_json_atomic, write_parquet_atomic
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.splits.chronological import cv_folds, development, folds_summary, segment_counts
from quant_cli.stages.common import check_recipe, dataset_record, embargo_of, pin_checked, pinned_for
from quant_cli.stages.results import SplitResult, as_written


def _weighted(recipe: Recipe) -> bool:
    return recipe["split"]["sample_weight"] != "none" or recipe["split"]["time_decay"] < 1.0


def _write_split(
    run: Run, recipe: Recipe, prepared: Prepared, snapshot: store.Snapshot, reporter: Reporter
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """split/ of the run; returns (boundaries.json, the CV folds' n_splits and n_paths or None)."""
    kept = prepared.kept
    counts, dropped = segment_counts(kept), prepared.dropped()
    with stage_outputs(run, "split") as folder:
        boundaries = {
            **prepared.plan.to_json(),
            "method": recipe["split"]["method"],
            "horizon": recipe["label"]["horizon"],
            "label": recipe["label"]["kind"],
            "execution": recipe["backtest"]["execution"],
            "dropped": dropped,
            "segments": {seg: {k: v for k, v in c.items() if k != "rows_per_symbol"} for seg, c in counts.items()},
        }
        write_json_atomic(folder / "boundaries.json", boundaries)
        write_json_atomic(folder / "counts.json", counts)
        write_split(folder, prepared, _weighted(recipe))
        folds, cv = cv_folds(kept, recipe["split"], embargo_of(recipe)), None
        if folds is not None:
            summary = folds_summary(folds, development(kept))
            write_json_atomic(folder / "folds.json", summary)
            cv = {k: v for k, v in summary.items() if k in ("n_splits", "n_paths")}
            reporter.info(
                f"split: {recipe['split']['method']} with {summary['n_splits']} splits "
                f"and {summary['n_paths']} backtest path(s) over train + val"
            )
        if kept["weight"].null_count() < kept.height:
            write_parquet_atomic(
                folder / "weights.parquet", kept.filter(pl.col("weight").is_not_null()).select(*KEYS, "weight")
            )
    run.update_manifest(
        fingerprints={"features": prepared.fingerprint, "dataset": snapshot.content_hash},
        dataset=dataset_record(snapshot),
        adjust=prepared.pipeline.adjustment.to_json(),
    )
    summary = ", ".join(f"{seg} {c['rows']:,}" for seg, c in counts.items())
    reporter.info(
        f"split: {summary} rows; purged {sum(dropped['purged'].values()):,}, "
        f"embargoed {sum(dropped['embargoed'].values()):,}"
    )
    return as_written(boundaries), as_written(cv)


def split_stage(run: Run, recipe: Recipe, snapshot: store.Snapshot, reporter: Reporter) -> SplitResult:
    with run.stage("split") as info:
        # Named before the long read: `data vacuum` keeps versions that run manifests (staging ones
        # too) pin, so another job's replace + vacuum cannot delete the files this split is reading.
        run.update_manifest(dataset=dataset_record(snapshot))
        with reporter.working("split: features, labels, purge and embargo, train-only preprocessing"):
            prepared = prepare(recipe, snapshot, reporter=reporter)
        boundaries, cv = _write_split(run, recipe, prepared, snapshot, reporter)
        info["rows"] = prepared.kept.height
    return SplitResult(run, boundaries, cv, prepared)


def new_split_run(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> SplitResult:
    """`qfactory split --recipe R`: a new run holding only the split. Its recipe is fixed, so the
    model is checked too: a run that `train --run` could never train is not made."""
    return _new_split(recipe, data_dir, runs_dir, reporter, model=True)


def split_new(
    recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT, *, model: bool = False
) -> tuple[Run, Prepared]:
    """A new (committed) run holding only the split, and the split in memory (tuning shares it
    with every trial); `model` checks the recipe's model before any heavy work."""
    result = _new_split(recipe, data_dir, runs_dir, reporter, model=model)
    return result.run, result.prepared


def _new_split(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter, model: bool) -> SplitResult:
    check_recipe(recipe, reporter, model=model)
    snapshot = pin_checked(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        return split_stage(run, recipe, snapshot, reporter)


def load_run_split(run: Run, data_dir: Path) -> Prepared:
    """A run's stored split on the dataset version it was split on (nothing is recomputed)."""
    recipe = run.recipe()
    return load_split(run.path / "split", recipe, pinned_for(run, recipe, data_dir))
