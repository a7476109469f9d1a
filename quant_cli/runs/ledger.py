"""The trial ledger: every run that reports an out-of-sample Sharpe ratio on a dataset is a trial.

It is derived from the run directories alone (manifest.json and metrics.json), so there is no
separate state to corrupt. A run reports a trial when its metrics.json holds
`backtest.sharpe` of the test segment (`backtest.segment`, default "test") or `walkforward.sharpe`;
either block carries `periods`, `periods_per_year`, `skew` and raw `kurtosis` of the returns
the Sharpe ratio was computed on.

The deflated Sharpe ratio of a trial (Bailey & López de Prado 2014) is computed against other
trials on the same dataset, N = their number, V[SR] = the sample variance of their per-period
Sharpe ratios, in two views: `deflated_now` against all trials in the ledger now (what `runs ls`
shows: whoever picks a run today picked it among all of them), and `deflated` against the trials
created up to and including it (the value at its creation, in `runs show`). A researcher who ran
200 variants sees what the best is worth. Missing moments default to skew 0 and raw kurtosis 3;
a trial without `periods` is counted in N, but its own ratios are NaN ("n/a").

Identical reruns are one trial. Rerunning an experiment unchanged tries nothing new, so runs
with the same `Trial.key` count once in N (and once in V[SR], by the earliest of them). The key
is the kind (backtest or walkforward) plus what decides the result:
  - the resolved recipe: the manifest's `fingerprints.experiment` (the recipe without run.name,
    run.runs_dir, data.data_dir and [serve], which name and place a run but change no number),
    else `fingerprints.recipe` (the whole resolved recipe, for runs made before it existed);
  - the data version: the pinned dataset's content hash (`dataset.content_hash`; a re-ingest of
    the same bars is the same data), else its table version;
  - the code: `qfactory_version` and `git_commit` as the manifest records them (a run made
    outside a git checkout has none: then the version alone). Library versions and the device
    are left out: a numpy upgrade or a GPU is the same experiment, even if the last digits move.
A run whose manifest has neither fingerprint is its own trial (key = its run id), as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quant_cli.backtest.metrics import deflated_sharpe_ratio, expected_max_sharpe, probabilistic_sharpe_ratio
from quant_cli.io import STAGING_PREFIX, read_json
from quant_cli.recipe import fingerprint

KINDS = ("backtest", "walkforward")


@dataclass(frozen=True)
class Trial:
    run_id: str
    dataset: str
    kind: str  # backtest (test segment) or walkforward
    created: str  # ISO time the run was created; orders the ledger
    sharpe: float  # annualised
    periods: int
    periods_per_year: float
    skew: float
    kurtosis: float  # raw (3 for normal returns)
    key: str = ""  # identical reruns share it and count once (trial_key); "" = the run id

    @property
    def identity(self) -> tuple[str, str]:
        """(dataset, key): what N counts once."""
        return self.dataset, self.key or f"{self.kind}:{self.run_id}"

    @property
    def sharpe_per_period(self) -> float:
        return self.sharpe / math.sqrt(self.periods_per_year) if self.periods_per_year > 0 else float("nan")


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _number(block: dict[str, Any], key: str, default: float = float("nan")) -> float:
    value = block.get(key)
    if value is None:  # absent, or NaN written as null: the documented default
        return default
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def run_trials(run_dir: Path) -> list[Trial]:
    """The trials one run reports (none for an unreadable or unfinished run)."""
    manifest, metrics = _read_object(run_dir / "manifest.json"), _read_object(run_dir / "metrics.json")
    if manifest is None or metrics is None:
        return []
    return trials_of(str(manifest.get("run_id", run_dir.name)), manifest, with_segment(run_dir, metrics))


def with_segment(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Backtests written before metrics.json carried `segment` name it only in the config of
    backtest/summary.json; read it there (one small file, only for such runs), so a
    validation-segment backtest of an older run is not mistaken for a test-segment trial."""
    block = metrics.get("backtest")
    if not isinstance(block, dict) or "segment" in block:
        return metrics
    summary = _read_object(Path(run_dir) / "backtest" / "summary.json")
    config = summary.get("config") if summary else None
    segment = config.get("segment") if isinstance(config, dict) else None
    return {**metrics, "backtest": {**block, "segment": segment}} if isinstance(segment, str) else metrics


def trials_of(run_id: str, manifest: dict[str, Any], metrics: dict[str, Any]) -> list[Trial]:
    """The trials in one run's already-read manifest and metrics (`runs ls` reads each file once).

    Missing return moments take documented defaults: skew 0 and raw kurtosis 3 (normal returns);
    a missing `periods` leaves the trial counted but its (deflated) Sharpe ratio statistics NaN."""
    out = []
    for kind in KINDS:
        block = metrics.get(kind)
        if not isinstance(block, dict) or not math.isfinite(_number(block, "sharpe")):
            continue
        if kind == "backtest" and block.get("segment", "test") != "test":
            continue  # a validation-segment backtest is model selection, not a reported result
        out.append(trial_of_summary(run_id, {**manifest, "run_id": run_id}, kind, block))
    return out


def trial_key(run_id: str, manifest: dict[str, Any], kind: str) -> str:
    """Same resolved recipe, data version and code (see the module doc) -> same key."""
    prints = manifest.get("fingerprints") if isinstance(manifest.get("fingerprints"), dict) else {}
    recipe = prints.get("experiment") or prints.get("recipe")
    if not recipe:
        return f"{kind}:{run_id}"
    data = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return fingerprint(
        {
            "kind": kind,
            "recipe": recipe,
            "data": data.get("content_hash") or data.get("version"),
            "qfactory": manifest.get("qfactory_version"),
            "git": manifest.get("git_commit"),
        }
    )


def trial_of_summary(run_id: str, manifest: dict[str, Any], kind: str, summary: dict[str, Any]) -> Trial:
    """The trial a backtest summary (metrics.json block) of a run makes, before it is written."""
    return Trial(
        run_id=str(manifest.get("run_id", run_id)),
        dataset=_dataset(manifest),
        kind=kind,
        created=str(manifest.get("created", "")),
        sharpe=_number(summary, "sharpe"),
        periods=int(_number(summary, "periods", 0) if math.isfinite(_number(summary, "periods", 0)) else 0),
        periods_per_year=_number(summary, "periods_per_year"),
        skew=_number(summary, "skew", 0.0),
        kurtosis=_number(summary, "kurtosis", 3.0),
        key=trial_key(str(manifest.get("run_id", run_id)), manifest, kind),
    )


def _dataset(manifest: dict[str, Any]) -> str:
    return str((manifest.get("dataset") or {}).get("name") if isinstance(manifest.get("dataset"), dict) else None)


def ledger(runs_dir: Path, dataset: str | None = None) -> list[Trial]:
    """Every trial under `runs_dir` (on `dataset` when given), oldest first."""
    trials: list[Trial] = []
    if runs_dir.is_dir():
        for child in runs_dir.iterdir():
            if child.is_dir() and not child.name.startswith((".", STAGING_PREFIX)):
                trials.extend(t for t in run_trials(child) if dataset is None or t.dataset == dataset)
    return sorted(trials, key=lambda t: (t.created, t.run_id, t.kind))


def deflated(trial: Trial, trials: list[Trial]) -> dict[str, Any]:
    """The trial's deflated Sharpe ratio against the trials on its dataset created up to and
    including it; `n_trials` and `sharpe_variance` (per period) say what it was deflated by."""
    before = distinct(
        [
            t
            for t in trials
            if t.dataset == trial.dataset and (t.created, t.run_id, t.kind) <= (trial.created, trial.run_id, trial.kind)
        ]
    )
    per_period = [t.sharpe_per_period for t in before if math.isfinite(t.sharpe_per_period)]
    variance = _sample_variance(per_period)
    dsr = deflated_sharpe_ratio(
        trial.sharpe_per_period, trial.periods, trial.skew, trial.kurtosis, len(before), variance
    )
    return {"deflated_sharpe": dsr, "n_trials": len(before), "sharpe_variance": variance}


def distinct(trials: list[Trial]) -> list[Trial]:
    """One trial per identity (dataset, key): the earliest; identical reruns add nothing to N."""
    first: dict[tuple[str, str], Trial] = {}
    for t in sorted(trials, key=lambda t: (t.created, t.run_id, t.kind)):
        first.setdefault(t.identity, t)
    return list(first.values())


def deflated_among_runs(trial: Trial, runs_dir: Path) -> dict[str, Any]:
    """`deflated` for a run's own trial, written or not yet (a run still in its staging folder),
    against the ledger of the other runs under `runs_dir` on its dataset plus itself."""
    others = [t for t in ledger(runs_dir, trial.dataset) if (t.run_id, t.kind) != (trial.run_id, trial.kind)]
    return deflated(trial, [*others, trial])


def deflated_now(trials: list[Trial]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every trial deflated against ALL distinct trials on its dataset in the ledger now, keyed by
    (run_id, kind): the view of someone picking the best run today, who selected among all of
    them — so every trial on a dataset shows the same N. `deflated` is the view at the trial's
    creation (N = trials up to it). One pass per dataset: fast for thousands of runs."""
    by_dataset: dict[str, list[Trial]] = {}
    for trial in trials:
        by_dataset.setdefault(trial.dataset, []).append(trial)
    out = {}
    for group in by_dataset.values():
        counted = distinct(group)
        variance = _sample_variance([t.sharpe_per_period for t in counted if math.isfinite(t.sharpe_per_period)])
        benchmark = expected_max_sharpe(len(counted), variance)  # DSR = PSR against it: computed once per dataset
        for t in group:
            dsr = probabilistic_sharpe_ratio(t.sharpe_per_period, t.periods, t.skew, t.kurtosis, benchmark)
            out[(t.run_id, t.kind)] = {"deflated_sharpe": dsr, "n_trials": len(counted), "sharpe_variance": variance}
    return out


def psr(trial: Trial) -> float:
    """The trial's probabilistic Sharpe ratio against 0: what it would be worth as the only trial."""
    return probabilistic_sharpe_ratio(trial.sharpe_per_period, trial.periods, trial.skew, trial.kurtosis)


def _sample_variance(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
