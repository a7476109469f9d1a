"""`qfactory audit --run RUN`: does a finished run hold up to a sceptical risk committee?

Three questions, one verdict (`audit_run`):

1. Look-ahead in scoring (audit/scoring.py): re-score the run's bars through its own FittedPipeline
   and model with every bar after each of several cutoffs rewritten; scores at or before a cutoff
   must not move.
2. Look-ahead in training (audit/training.py): refit the run on bars rewritten after the end of
   validation, in a private data home; the fitted pipeline, the training inputs and (for a
   deterministic fit) the validation and test scores on the original bars must not move.
3. Luck (audit/luck.py): a permutation test of the run's test IC against refits on labels shuffled
   across symbols within each timestamp, and the deflated Sharpe ratio over the trial ledger.

The run is never changed except for `audit/audit.json` (and the report.html it already has, which
gains an audit section). Look-ahead checks decide the verdict; luck is evidence beside it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli import __version__
from quant_cli.audit import luck, scoring, training
from quant_cli.backtest.report import render_run_reports
from quant_cli.data import store
from quant_cli.dataset.table import load_split
from quant_cli.errors import RecipeError, RunError
from quant_cli.features import plugins
from quant_cli.io import read_json, read_run_parquet, write_json_atomic
from quant_cli.models.registry import load_model
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run
from quant_cli.stages.common import pinned_for

CUTOFFS = 3
FOLDER = "audit"
FILE = "audit.json"
LOOKAHEAD_FAILED = 3  # the exit code of a run that fails a look-ahead check


@dataclass
class AuditResult:
    run: Run
    report: dict[str, Any]  # audit.json as written

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"

    @property
    def failure(self) -> str | None:
        """One line naming the first failing look-ahead check, or None."""
        return self.report.get("failure")

    @property
    def path(self) -> Path:
        return self.run.path / FOLDER / FILE


def audit_run(
    run: Run, data_dir: Path, permutations: int = luck.DEFAULT_PERMUTATIONS, reporter: Reporter = SILENT
) -> AuditResult:
    """Audit a trained run (module docstring); writes `<run>/audit/audit.json` and refreshes report.html.
    The deflated Sharpe ratio counts the trials among the runs beside it (its runs home)."""
    if permutations < 0:
        raise RecipeError(f"--permutations must be 0 or more (0 skips the permutation test), got {permutations}")
    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    recipe = run.recipe()
    snapshot = pinned_for(run, recipe, data_dir)
    seed = int(recipe["run"]["seed"])
    original = load_split(run.path / "split", recipe, snapshot)
    predictions = read_run_parquet(run.path, "predictions.parquet")
    pipeline = FittedPipeline.from_json(read_json(run.path / "split" / "pipeline.json"))
    _check_plugins_unchanged(run, recipe, pipeline)
    loaded = scoring.scorer(run.path, pipeline, load_model(run.path / "model"))
    cutoffs = scoring.choose_cutoffs(predictions, CUTOFFS)
    if not cutoffs:
        raise RunError(
            f"run {run.id} scored fewer than 2 validation/test timestamps, so no cutoff can be placed; "
            "audit a run whose split leaves validation and test rows"
        )
    with reporter.working(f"audit: scoring {len(cutoffs)} rewritten futures"):
        scoring_checks = scoring.scoring_checks(loaded, _scoring_bars(recipe, snapshot), cutoffs, seed, reporter)
    trained = training.training_checks(recipe, snapshot, original, predictions, seed, reporter)
    observed = _observed_ic(run)
    luck_block = (
        luck.permutation_test(recipe, snapshot, original, observed, permutations, seed, reporter)
        if permutations
        else {"permutations": 0, "skipped": "--permutations 0"}
    )
    manifest = run.manifest()
    luck_block["deflated_sharpe"] = luck.deflated_sharpe(
        str(manifest.get("run_id", run.id)), str((manifest.get("dataset") or {}).get("name")), run.path.parent
    )
    report = _report(run, scoring_checks, trained, luck_block)
    write_json_atomic(run.path / FOLDER / FILE, report)
    render_run_reports(run.path)  # the run's report.html (if it has one) gains the audit section
    _tell(report, reporter)
    return AuditResult(run, report)


def _check_plugins_unchanged(run: Run, recipe: Any, pipeline: FittedPipeline) -> None:
    """The refits read the recipe's plugin files: they must hold the code the run carries, or the
    audit would compare two different factors and call the difference look-ahead."""
    now = {p.sha256 for p in plugins.read_plugins(recipe["features"])}
    changed = [p["file"] for p in pipeline.plugins if p["sha256"] not in now]
    if changed:
        raise RunError(
            f"run {run.id}: plugin {changed[0]} changed since the run was made (its SHA-256 differs from the one "
            "in split/pipeline.json); restore the file to audit this run, or train a new run"
        )


def _scoring_bars(recipe: Any, snapshot: store.Snapshot) -> pl.DataFrame:
    """The run's raw bars up to data.end, with the benchmark's (the rows it scored, and their history)."""
    bars = training.store_bars(recipe, snapshot)
    return (
        bars.filter(pl.col("ts") <= store.parse_time(recipe["data"]["end"], "data.end"))
        if recipe["data"]["end"]
        else bars
    )


def _observed_ic(run: Run) -> float:
    test = (read_json(run.path / "metrics.json").get("test") or {}) if (run.path / "metrics.json").is_file() else {}
    value = test.get("ic")
    return float(value) if isinstance(value, (int, float)) else math.nan


def _report(
    run: Run, scoring_checks: list[dict[str, Any]], trained: dict[str, Any], luck_block: dict[str, Any]
) -> dict[str, Any]:
    deciding = [*scoring_checks, *(c for c in trained["checks"] if c.get("decides", True))]
    failed = [c for c in deciding if not c["passed"]]
    return {
        "run_id": run.id,
        "qfactory_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "verdict": "fail" if failed else "pass",
        "failure": failure_line(failed[0]) if failed else None,
        "checks": {"passed": len(deciding) - len(failed), "failed": len(failed), "total": len(deciding)},
        "scoring": {"cutoffs": [c["cutoff"] for c in scoring_checks], "checks": scoring_checks},
        "training": trained,
        "luck": luck_block,
    }


def failure_line(check: dict[str, Any]) -> str:
    """The one line a failing run exits with."""
    first = check.get("first")
    where = (f"{first['symbol']} at {first['ts']}" if isinstance(first, dict) else first) or "?"
    if check["name"].startswith("scoring"):
        return (
            f"look-ahead: {check['name']}: {check['differing']} of {check['rows']} score(s) at or before the cutoff "
            f"changed when later bars were rewritten, first {where}"
        )
    if "pipeline" in check["name"]:
        return f"look-ahead: {check['name']}: {where}"
    return (
        f"look-ahead: {check['name']}: changed when the bars after the end of validation were rewritten, first {where}"
    )


def _tell(report: dict[str, Any], reporter: Reporter) -> None:
    counts = report["checks"]
    reporter.info(f"audit: look-ahead {counts['passed']}/{counts['total']} check(s) passed")
    repro = report["training"]["reproduction"]
    if not repro["reproduced"]:
        reporter.notice(
            f"audit: refitting the run did not reproduce its predictions ({repro['differing']} of {repro['rows']} "
            f"scores differ, max {repro['max_abs_difference']:.3g}); "
            "the look-ahead checks compare refits with each other"
        )
    if not report["training"]["deterministic"]:
        reporter.notice(
            f"audit: the fit ran on {report['training']['device']}, which is not bit-reproducible; its score "
            "checks are reported, not decisive"
        )
    block = report["luck"]
    if block.get("permutations"):
        reduced = f" (fewer than the default {block['default_permutations']})" if block["reduced"] else ""
        reporter.info(
            f"audit: permutation test over {block['permutations']} refit(s){reduced}: test IC "
            f"{block['observed_test_ic']:.4f} vs null {block['null_mean']:.4f}, p = {block['p_value']:.3f}"
            + (" (the smallest this many permutations can show)" if block["p_value"] == block["min_p_value"] else "")
        )
    dsr = block["deflated_sharpe"]
    if dsr["available"]:
        reporter.info(f"audit: deflated Sharpe {dsr['deflated_sharpe']:.3f} over {dsr['n_trials']} trial(s)")
