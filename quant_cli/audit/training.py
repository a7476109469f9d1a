"""Look-ahead in training: refit the run — same resolved recipe, seed, dataset version and split
boundaries — on its bars with everything after the end of validation rewritten, and on its bars as
they are (the control); what the fit can have seen must not move.

The rewritten bars go to a private data home in a temporary folder (a new Delta table there, with
its own feature build), never into the user's store; the control reads the run's own split/ and
cached feature version. The horizon is the later of the last bar before the test segment and the
last label end (t1) of a kept training or validation row: an honest fit reads nothing after it.

Checks, in order (each names the first value that moved):
- fitted pipeline: the preprocessing state fit on the rewritten data equals the control's;
- the run's pipeline: the run's split/pipeline.json state equals the control's (a fit on its training
  rows alone: a scaler that saw validation or test rows fails here even when today's code is honest);
- training inputs: every feature row up to the horizon (sequence windows read purged rows too) and the
  labels and weights of the kept training and validation rows are unchanged;
- validation scores / test scores on the ORIGINAL bars: the refit on rewritten data scores like the
  control refit. Only for a deterministic fit; a fit on a GPU is not bit-reproducible (cuDNN, atomics),
  so for it these two are reported but do not decide the verdict (the pipeline and the training inputs
  still do).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.audit.compare import compare_nested, compare_scores, differs, max_difference
from quant_cli.audit.rewrite import rewrite_after
from quant_cli.data import store
from quant_cli.dataset import table as dataset_table
from quant_cli.dataset.table import KEYS, Prepared, load_bars
from quant_cli.features import plugin_check
from quant_cli.features.references import References
from quant_cli.models.base import Model
from quant_cli.models.covariates import bar_inputs
from quant_cli.models.registry import forecasts_path
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.splits.chronological import EXCLUDED
from quant_cli.stages import fitting
from quant_cli.stages.train import fit_model

FIT_SEGMENTS = ("train", "val")


@dataclass
class Refit:
    """One refit of the run: its model and its val/test scores on the original rows."""

    model: Model
    scores: pl.DataFrame


def horizon(prepared: Prepared) -> dt.datetime:
    """The last timestamp an honest fit of this split reads: the last bar before the test segment,
    or a later label end of a kept training/validation row (a split without purge)."""
    rows = prepared.rows
    before_test = rows.filter(pl.col("ts") < prepared.plan.test_start)["ts"].max()
    fitted = rows.filter(pl.col(EXCLUDED).is_null() & pl.col("segment").is_in(FIT_SEGMENTS))["t1"].max()
    return max(t for t in (before_test, fitted) if t is not None)


def store_bars(recipe: Recipe, snapshot: store.Snapshot) -> pl.DataFrame:
    """Every bar of the pinned version the recipe can read (its symbols, the benchmark's and the
    same-dataset references'), all dates."""
    symbols = recipe["data"]["symbols"] or None
    benchmark = recipe["features"].get("benchmark")
    refs = References.from_section(recipe["features"].get("references"), snapshot.dataset)
    others = [benchmark] if benchmark else []
    others += refs.symbols if refs is not None and not refs.external else []
    known = set(snapshot.manifest.get("symbols", []))
    if symbols:
        symbols = [*symbols, *(s for s in dict.fromkeys(others) if s not in symbols and s in known)]
    return snapshot.load_bars(symbols=symbols)


def adjusted_bars(recipe: Recipe, snapshot: store.Snapshot, prepared: Prepared) -> Callable[[], pl.DataFrame]:
    """The run's adjusted bars, read when a model that reads raw bars asks for them."""
    return lambda: prepared.pipeline.adjustment.apply(load_bars(recipe, snapshot))


def channels_of(model: Model, recipe: Recipe, bars: Callable[[], pl.DataFrame]) -> pl.DataFrame | None:
    return bar_inputs(model, bars(), recipe["features"]["timeframes"]) if model.reads_bars() else None


def refit(
    recipe: Recipe,
    fit_on: Prepared,
    fit_bars: Callable[[], pl.DataFrame],
    score_on: Prepared,
    score_bars: Callable[[], pl.DataFrame],
) -> Refit:
    """Fit the recipe's model on `fit_on` (as the train stage does), then score the val and test rows
    of `score_on` (the original rows, through the refit's own pipeline). Silently: a refit's epochs
    and notices repeat the run's."""
    model, _, _ = fit_model(recipe, fit_on, None, SILENT, bars=fit_bars)
    scoring = replace(score_on, pipeline=fit_on.pipeline)
    inputs = fitting.segment_inputs(model, scoring, ("val", "test"), channels_of(model, recipe, score_bars))
    return Refit(model, fitting.predict_segments(model, inputs))


def rewritten_split(
    recipe: Recipe,
    snapshot: store.Snapshot,
    original: Prepared,
    cutoff: dt.datetime,
    seed: int,
    home: Path,
) -> tuple[Prepared, Callable[[], pl.DataFrame]]:
    """The run's split rebuilt (features, labels, weights, fitted pipeline) from its bars rewritten
    after `cutoff`, stored as the same dataset in the private data home `home`."""
    bars = rewrite_after(store_bars(recipe, snapshot), cutoff, seed)
    store.write_store(
        home,
        snapshot.dataset,
        bars,
        "qfactory audit: bars rewritten after the end of validation",
        snapshot.manifest.get("frequency"),
    )
    private = store.pin(home, snapshot.dataset)
    with plugin_check.audited():  # a leaky plugin is this audit's finding, not a refused refit
        prepared = dataset_table.prepare(recipe, private, plan=original.plan, path=forecasts_path(recipe))
    return prepared, adjusted_bars(recipe, private, prepared)


def pipeline_checks(stored: Prepared, control: Prepared, rewritten: Prepared) -> list[dict[str, Any]]:
    """The refit's preprocessing state must not move with the future, and the run's stored state must
    be what a fit on its training rows gives (a scaler that saw other rows fails the second)."""
    moved = compare_nested(control.pipeline.state, rewritten.pipeline.state)
    stored_differs = compare_nested(control.pipeline.state, stored.pipeline.state)
    return [
        {
            "name": "training: fitted pipeline",
            "passed": moved is None,
            **(
                {"first": f"preprocessing state {moved} moved when the bars after the end of validation were rewritten"}
                if moved is not None
                else {}
            ),
        },
        {
            "name": "training: the run's pipeline",
            "passed": stored_differs is None,
            **(
                {"first": f"its preprocessing state {stored_differs} is not a fit on its training rows alone"}
                if stored_differs is not None
                else {}
            ),
        },
    ]


def inputs_check(original: Prepared, rewritten: Prepared, cutoff: dt.datetime) -> dict[str, Any]:
    """Raw features of every row up to the horizon, labels and weights of the kept fit rows."""
    keys = original.rows.filter(pl.col("ts") <= cutoff).select(KEYS)
    a, b = original.table.with_features(keys), rewritten.table.with_features(keys)
    out: dict[str, Any] = {"name": "training: training inputs", "rows": keys.height, "features": len(original.features)}
    for feature in original.features:
        bad = differs(a[feature].to_numpy(), b[feature].to_numpy())
        if bad.any():
            row = a.row(int(np.flatnonzero(bad)[0]), named=True)
            return {**out, "passed": False, "first": f"feature {feature} of {row['symbol']} at {row['ts'].isoformat()}"}
    fit_rows = [
        p.rows.filter(pl.col(EXCLUDED).is_null() & pl.col("segment").is_in(FIT_SEGMENTS)).sort(KEYS)
        for p in (original, rewritten)
    ]
    if fit_rows[0].select(KEYS).equals(fit_rows[1].select(KEYS)) is False:
        return {**out, "passed": False, "first": "the kept training/validation rows"}
    for column in ("label", "weight"):
        x, y = (r[column].cast(pl.Float64).fill_null(np.nan).to_numpy() for r in fit_rows)
        bad = differs(x, y)
        if bad.any():
            row = fit_rows[0].row(int(np.flatnonzero(bad)[0]), named=True)
            return {**out, "passed": False, "first": f"{column} of {row['symbol']} at {row['ts'].isoformat()}"}
    return {**out, "passed": True}


def score_checks(control: Refit, rewritten: Refit, decides: bool) -> list[dict[str, Any]]:
    out = []
    for segment in ("val", "test"):
        part = pl.col("segment") == segment
        result = compare_scores(control.scores.filter(part), rewritten.scores.filter(part))
        out.append(
            {
                "name": f"training: {'validation' if segment == 'val' else 'test'} scores",
                "passed": result["differing"] == 0,
                "decides": decides,
                **result,
            }
        )
    return out


def reproduction(run_scores: pl.DataFrame, control: Refit) -> dict[str, Any]:
    """How closely the control refit reproduces the run's own predictions.parquet (informational)."""
    result = compare_scores(run_scores.select(*KEYS, "score"), control.scores.select(*KEYS, "score"))
    joined = run_scores.join(control.scores, on=KEYS, suffix="_refit")
    return {
        "reproduced": result["differing"] == 0,
        "rows": result["rows"],
        "differing": result["differing"],
        "max_abs_difference": max_difference(joined["score"].to_numpy(), joined["score_refit"].to_numpy()),
    }


def training_checks(
    recipe: Recipe,
    snapshot: store.Snapshot,
    original: Prepared,
    run_scores: pl.DataFrame,
    seed: int,
    reporter: Reporter = SILENT,
) -> dict[str, Any]:
    """The training checks (module docstring), with the horizon, determinism and reproduction."""
    cutoff = horizon(original)
    bars = adjusted_bars(recipe, snapshot, original)
    control_pipeline = dataset_table.fit_pipeline(original.pipeline.unfitted(), original.table, original.rows)
    control_split = replace(original, pipeline=control_pipeline)
    with reporter.working("audit: refitting the run on its own bars (the control)"):
        control = refit(recipe, control_split, bars, original, bars)
    deterministic = control.model.fit_info().get("device", "cpu") == "cpu"
    with tempfile.TemporaryDirectory(prefix="qfactory-audit-") as home:
        with reporter.working(f"audit: refitting on bars rewritten after {cutoff.isoformat()}"):
            rewritten, rewritten_bars = rewritten_split(recipe, snapshot, original, cutoff, seed, Path(home))
            refitted = refit(recipe, rewritten, rewritten_bars, original, bars)
        checks = [
            *pipeline_checks(original, control_split, rewritten),
            inputs_check(original, rewritten, cutoff),
            *score_checks(control, refitted, deterministic),
        ]
    block = {
        "horizon": cutoff.isoformat(),
        "deterministic": deterministic,
        "device": control.model.fit_info().get("device", "cpu"),
        "model": control.model.name,
        "reproduction": reproduction(run_scores, control),
        "checks": checks,
    }
    return block
