"""`qfactory runs show` and `runs compare`: one run in detail, or runs side by side.

Both read the runs' small files only (manifest.json, metrics.json, recipe.toml). A damaged file
is one RunError line naming it (through `io.read_run_json`), never a traceback.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
from typing import Any

from quant_cli.errors import RunError
from quant_cli.io import read_run_json
from quant_cli.runs.directory import Run
from quant_cli.runs.ledger import deflated, psr, with_segment
from quant_cli.runs.listing import (
    RunRecord,
    age_seconds,
    describe,
    key_metrics,
    ledger_of,
    scan,
    stage_status,
    trial_entry,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def numeric(flat: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flattened dict (booleans are not metrics)."""
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def checked_record(run: Run) -> RunRecord:
    """The run's manifest and metrics, checked: a damaged one is a RunError line."""
    manifest = run.manifest()
    metrics = read_run_json(run.path, "metrics.json") if (run.path / "metrics.json").is_file() else {}
    return RunRecord(run.path, manifest, with_segment(run.path, metrics), None, frozenset(os.listdir(run.path)))


def read_recipe(run: Run) -> dict[str, Any]:
    """The run's resolved recipe.toml as written (not re-validated: an older run stays readable)."""
    try:
        return tomllib.loads((run.path / "recipe.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(
            f"run {run.id}: recipe.toml is not valid TOML ({exc}); the run is "
            "damaged, start a new one with `qfactory train --recipe R`"
        ) from None


def show_run(run: Run, now: dt.datetime | None = None) -> dict[str, Any]:
    """Manifest summary, stages with timings, metrics, and the run's trial-ledger entries."""
    from quant_cli.runs.gc import protections  # gc imports listing; this keeps the import graph a tree

    record = checked_record(run)
    manifest = record.manifest
    records = scan(run.path.parent)
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    stages = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    return {
        **describe(record),
        **stage_status(record),
        "age_seconds": age_seconds(record.created, now or dt.datetime.now(dt.timezone.utc)),
        "dataset_version": dataset.get("version"),
        **{k: manifest.get(k) for k in ("seed", "device", "qfactory_version", "python", "git_commit", "references")},
        "stages": {name: entry for name, entry in stages.items() if isinstance(entry, dict)},
        "key_metrics": key_metrics(record.metrics),
        "metrics": record.metrics,
        "ledger": _ledger_entries(record, records),
        "protected_by": protections(run.path.parent, records).get(run.id, []),
    }


def _ledger_entries(record: RunRecord, records: list[RunRecord]) -> list[dict[str, Any]]:
    """Each trial deflated against all trials on its dataset now, and as it was at its creation."""
    if all(r.run_id != record.run_id for r in records):
        records = [*records, record]  # a run given by a path outside its runs home
    per_run, views = ledger_of(records)
    everything = [t for trials in per_run.values() for t in trials]
    out = []
    for trial in per_run.get(record.run_id, []):
        then = deflated(trial, everything)
        out.append(
            {
                **trial_entry(trial, views[(trial.run_id, trial.kind)]),
                "psr": _finite(psr(trial)),
                "skew": trial.skew,
                "kurtosis": trial.kurtosis,
                "periods_per_year": _finite(trial.periods_per_year),
                "deflated_sharpe_at_creation": _finite(then["deflated_sharpe"]),
                "n_trials_at_creation": then["n_trials"],
            }
        )
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compare_runs(runs: list[Run]) -> dict[str, Any]:
    """Metrics side by side (every numeric metrics.json key, plus each run's deflated Sharpe
    ratio and N) and the resolved-recipe keys whose values differ, one list per key."""
    if len(runs) < 2:
        raise RunError("runs compare: needs at least two runs, e.g. `qfactory runs compare RUN_A RUN_B`")
    records = [checked_record(run) for run in runs]
    ledger = ledger_metrics(records)
    metrics = [{**numeric(flatten(r.metrics)), **ledger[r.run_id]} for r in records]
    recipes = [flatten(read_recipe(run)) for run in runs]
    return {
        "runs": [r.run_id for r in records],
        "metrics": _side_by_side(metrics, lambda values: True),
        "recipe": _side_by_side(recipes, lambda values: any(v != values[0] for v in values)),
    }


def ledger_metrics(records: list[RunRecord]) -> dict[str, dict[str, float]]:
    """Per run, its trials' deflated Sharpe ratio and N as flat metrics (`ledger.backtest.n_trials`)."""
    per_run, views = ledger_of(_with_homes(records))
    out: dict[str, dict[str, float]] = {}
    for record in records:
        flat = out.setdefault(record.run_id, {})
        for trial in per_run.get(record.run_id, []):
            view = views[(trial.run_id, trial.kind)]
            flat.update(
                numeric(
                    {
                        f"ledger.{trial.kind}.deflated_sharpe": view["deflated_sharpe"],
                        f"ledger.{trial.kind}.n_trials": view["n_trials"],
                    }
                )
            )
    return out


def _with_homes(records: list[RunRecord]) -> list[RunRecord]:
    """The compared runs plus every run in their homes: the ledger counts all trials."""
    homes = {r.path.parent for r in records}
    others = [o for home in homes for o in scan(home) if all(o.run_id != r.run_id for r in records)]
    return [*records, *others]


def _side_by_side(flats: list[dict[str, Any]], keep: Any) -> dict[str, list[Any]]:
    keys = sorted(set().union(*flats))
    rows = {key: [flat.get(key) for flat in flats] for key in keys}
    return {key: values for key, values in rows.items() if keep(values)}
