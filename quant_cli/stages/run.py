"""`qfactory run`: every configured stage (ingest when [data] source is set, split, train, backtest)
in one new run, for cron."""

from __future__ import annotations

from pathlib import Path

from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run
from quant_cli.stages.backtest import backtest_stage
from quant_cli.stages.common import check_recipe, check_universe, pin_checked
from quant_cli.stages.results import TrainResult
from quant_cli.stages.split import split_stage
from quant_cli.stages.train import train_stage


def _ingest_stage(run: Run, recipe: Recipe, data_dir: Path, reporter: Reporter) -> None:
    from quant_cli.data.ingest import ingest, request_from_recipe

    with run.stage("ingest") as info, reporter.working("ingest: reading and validating bars"):
        manifest = ingest(request_from_recipe(recipe), data_dir, reporter)
        info.update(dataset=manifest["dataset"], rows=manifest["rows"], content_hash=manifest["content_hash"])


def run_all(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> TrainResult:
    """`qfactory run --recipe R`: every configured stage in one new run (for cron)."""
    check_recipe(recipe, reporter)
    if not recipe["data"]["source"]:
        check_universe(recipe, pin_checked(recipe, data_dir))  # fail before a run exists; after an ingest, below
    with create_run(runs_dir, recipe) as run:
        if recipe["data"]["source"]:
            _ingest_stage(run, recipe, data_dir, reporter)
        snapshot = pin_checked(recipe, data_dir)
        check_universe(recipe, snapshot)
        prepared = split_stage(run, recipe, snapshot, reporter).prepared
        metrics = train_stage(run, recipe, prepared, reporter, snapshot=snapshot)
        metrics["backtest"] = backtest_stage(run, recipe, snapshot, reporter)
    return TrainResult(run, metrics)  # the run's whole metrics.json
