"""`qfactory runs ls`: every run in a runs home with its key metrics, status and trial-ledger entry.

Fast with thousands of runs because it reads only each run's manifest.json and metrics.json (and
lists the run folder once to spot an interrupted stage); it never opens parquet. A run whose
manifest or metrics cannot be read (invalid JSON, not an object) is listed as `damaged`, never a
crash. The ledger counts every trial on a dataset, whatever filters the listing applies.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_cli.errors import RunError, one_of, shown, suggest
from quant_cli.io import STAGING_PREFIX, _is_stale, parse_json, read_json_bytes
from quant_cli.runs.directory import STAGE_OUTPUTS, running_alive
from quant_cli.runs.ledger import Trial, deflated_now, trials_of, with_segment

# A run's state, worst first: what `--status` filters on (besides a committed stage's name).
STATES = ("damaged", "running", "failed", "interrupted", "ok")
STAGES = ("ingest", "split", "pretrain", "train", "backtest", "walkforward", "bundle", "tune")


@dataclass
class RunRecord:
    """What `runs ls` knows of one run: its two small JSON files and the names in its folder."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the run is damaged
    names: frozenset[str] = frozenset()

    @property
    def run_id(self) -> str:
        return self.path.name  # what `resolve_run` resolves

    @property
    def created(self) -> str:
        return str(self.manifest.get("created") or "")


def read_object(path: Path | str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None), (None, None) when the file is absent, or (None, why it is damaged)."""
    name = os.path.basename(path)
    try:
        value = parse_json(read_json_bytes(path))  # bytes: json decodes UTF-8 itself, faster than a text read
    except FileNotFoundError:
        return None, None
    except ValueError as exc:
        return None, f"{name} is not valid JSON ({exc})"
    except OSError as exc:
        return None, f"{name} cannot be read ({exc.strerror or exc})"
    return (value, None) if isinstance(value, dict) else (None, f"{name} is not a JSON object")


def read_record(path: Path) -> RunRecord | None:
    """The run in `path`, or None when the folder holds no manifest.json (not a run)."""
    folder = str(path)
    manifest, problem = read_object(os.path.join(folder, "manifest.json"))
    if manifest is None and problem is None:
        return None
    try:
        names = frozenset(os.listdir(folder))
    except OSError:
        names = frozenset()
    metrics, metrics_problem = (
        read_object(os.path.join(folder, "metrics.json")) if "metrics.json" in names else (None, None)
    )
    if metrics and "backtest" in names:
        metrics = with_segment(path, metrics)
    return RunRecord(path, manifest or {}, metrics or {}, problem or metrics_problem, names)


def scan(runs_dir: Path) -> list[RunRecord]:
    """Every run under `runs_dir`, newest first; hidden folders (staging, trash) are not runs."""
    if not runs_dir.is_dir():
        return []
    records, runs_dir = [], runs_dir.resolve()
    with os.scandir(runs_dir) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir():
                record = read_record(Path(entry.path))
                if record is not None:
                    records.append(record)
    return sorted(records, key=lambda r: (r.created, r.run_id), reverse=True)


def stage_status(record: RunRecord) -> dict[str, Any]:
    """Committed, failed and interrupted stages, and the run's state (the worst of them)."""
    stages = record.manifest.get("stages")
    stages = stages if isinstance(stages, dict) else {}
    by_status: dict[str, list[str]] = {"done": [], "failed": [], "interrupted": [], "running": []}
    for name, entry in stages.items():
        status = entry.get("status") if isinstance(entry, dict) else None
        if status == "running":  # its process still there, or killed before the stage recorded anything
            status = "running" if running_alive(entry) else "interrupted"
        if status in by_status:
            by_status[status].append(name)
    # A killed process leaves a stage's outputs without its manifest entry, or a dead staging folder.
    recorded = set(stages)
    by_status["interrupted"] += [
        s for s, outputs in STAGE_OUTPUTS.items() if s not in recorded and record.names & set(outputs)
    ]
    staging = [record.path / n for n in record.names if n.startswith(STAGING_PREFIX)]
    live = bool(by_status["running"]) or any(not _is_stale(p) for p in staging)
    if staging and not live and not by_status["interrupted"]:
        by_status["interrupted"].append("(staging)")
    state = (
        "damaged"
        if record.problem
        else "running"
        if live
        else "failed"
        if by_status["failed"]
        else "interrupted"
        if by_status["interrupted"]
        else "ok"
    )
    return {
        "state": state,
        "committed": by_status["done"],
        "failed": by_status["failed"],
        "interrupted": by_status["interrupted"],
    }


def check_status_filter(status: str | None) -> None:
    if status is not None and status not in STATES + STAGES:
        raise RunError(
            f"--status {shown(status)}: unknown{suggest(status, STATES + STAGES)}; use a state ({one_of(STATES)}) "
            f"or a stage name ({one_of(STAGES)}) to list runs with that stage committed"
        )


def _block(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    value = metrics.get(key)
    return value if isinstance(value, dict) else {}


def _finite(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def describe(record: RunRecord) -> dict[str, Any]:
    """The identity of a run: name, dataset, model, creation time (from the manifest)."""
    manifest, stages = record.manifest, record.manifest.get("stages")
    stages = stages if isinstance(stages, dict) else {}
    dataset = manifest.get("dataset")
    train = stages.get("train") if isinstance(stages.get("train"), dict) else {}
    pretrain = stages.get("pretrain") if isinstance(stages.get("pretrain"), dict) else {}
    parts = record.run_id.rsplit("-", 2)
    return {
        "run_id": record.run_id,
        "name": parts[0] if len(parts) == 3 else record.run_id,
        "dataset": dataset.get("name") if isinstance(dataset, dict) else None,
        "model": train.get("model") or _block(record.metrics, "train").get("model") or pretrain.get("model"),
        "kind": manifest.get("kind") if isinstance(manifest.get("kind"), str) else "run",  # pretrain, or run
        "created": record.created or None,
        "path": str(record.path),
    }


def key_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Validation/test IC and rank IC, and the backtest's Sharpe ratio and segment."""
    out = {
        f"{seg}_{name}": _finite(_block(metrics, seg).get(name))
        for seg in ("val", "test")
        for name in ("ic", "rank_ic")
    }
    backtest = _block(metrics, "backtest")
    out["sharpe"] = _finite(backtest.get("sharpe"))
    out["segment"] = backtest.get("segment", "test") if backtest else None
    out["walkforward_sharpe"] = _finite(_block(metrics, "walkforward").get("sharpe"))
    return out


def trial_entry(trial: Trial, view: dict[str, Any]) -> dict[str, Any]:
    """One ledger line: the Sharpe ratio, its deflated value and what it was deflated by."""
    return {
        "kind": trial.kind,
        "sharpe": _finite(trial.sharpe),
        "periods": trial.periods or None,
        "deflated_sharpe": _finite(view["deflated_sharpe"]),
        "n_trials": view["n_trials"],
        "sharpe_variance": _finite(view["sharpe_variance"]),
    }


def ledger_of(records: list[RunRecord]) -> tuple[dict[str, list[Trial]], dict[tuple[str, str], dict[str, Any]]]:
    """Each run's trials, and every trial deflated against all trials on its dataset."""
    # keyed by the folder name, the id `runs show` resolves
    per_run = {r.run_id: trials_of(r.run_id, r.manifest, r.metrics) for r in records if not r.problem and r.metrics}
    return per_run, deflated_now([t for trials in per_run.values() for t in trials])


def age_seconds(created: str | None, now: dt.datetime) -> float | None:
    try:
        when = dt.datetime.fromisoformat(str(created))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return round((now - when).total_seconds(), 3)


def list_runs(
    runs_dir: Path,
    dataset: str | None = None,
    model: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Rows for `runs ls`, newest first; filters apply after the ledger counted every trial."""
    check_status_filter(status)
    if limit is not None and limit < 0:
        raise RunError(f"--limit {limit}: must be 0 or more (the number of newest runs to list)")
    now = now or dt.datetime.now(dt.timezone.utc)
    records = scan(runs_dir)
    per_run, views = ledger_of(records)
    rows = []
    for record in records:
        row = {**describe(record), **key_metrics(record.metrics), **stage_status(record), "problem": record.problem}
        if limit is not None and len(rows) >= limit:
            break
        if _keep(row, dataset, model, status):
            rows.append(_with_ledger(row, per_run.get(record.run_id, []), views, now))
    return rows


def _keep(row: dict[str, Any], dataset: str | None, model: str | None, status: str | None) -> bool:
    if (dataset is not None and row["dataset"] != dataset) or (model is not None and row["model"] != model):
        return False
    return status is None or row["state"] == status or status in row["committed"]


def _with_ledger(
    row: dict[str, Any], trials: list[Trial], views: dict[tuple[str, str], dict[str, Any]], now: dt.datetime
) -> dict[str, Any]:
    entries = [trial_entry(t, views[(t.run_id, t.kind)]) for t in trials]
    first = entries[0] if entries else {}  # the test-segment backtest when there is one, else walk-forward
    return {
        **row,
        "age_seconds": age_seconds(row["created"], now),
        "trials": entries,
        "deflated_sharpe": first.get("deflated_sharpe"),
        "n_trials": first.get("n_trials"),
    }
