"""`qfactory runs export-mlflow`: copy runs into an MLflow tracking store.

Each run becomes one MLflow run tagged `qfactory.run_id`: params are the flattened resolved
recipe (recipe.toml), metrics the flattened numbers of metrics.json plus the run's trial-ledger
entry (deflated Sharpe ratio and N), artifacts its small files (recipe.toml, manifest.json,
metrics.json, model/, and the backtest report — every non-parquet file in backtest/). A torch
model's training telemetry (every number of each epoch in model/history.json: losses, learning rate,
gradient and parameter norms, expert usage, validation PnL, turnover and exposure) becomes metric histories
`epoch.<name>` with step = epoch; a pretrain run's loop history (pretrain/history.json) `pretrain.epoch.<name>`.

Exporting again is idempotent: the MLflow run with the same `qfactory.run_id` tag is reused,
params already there are not logged again, and a metric is logged only when its value changed
(a run that gained a backtest since adds the backtest metrics), so no duplicate runs or metric
history appear. MLflow is an optional extra (`pip install 'qfactory[mlflow]'`; mlflow-skinny
is enough).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from quant_cli.errors import QFactoryError, shown
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.compare import checked_record, flatten, ledger_metrics, numeric, read_recipe
from quant_cli.runs.directory import Run
from quant_cli.runs.listing import RunRecord

INSTALL = "pip install 'qfactory[mlflow]'"
TAG = "qfactory.run_id"
_PARAM_VALUE_MAX = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow takes at most 100 params (1000 metrics) per log_batch
_UNSAFE_KEY = re.compile(r"[^\w\-. /]")  # MLflow keys: alphanumerics, _ - . space /


class MissingExtra(QFactoryError):
    """An optional extra (here MLflow) is not installed."""


class TrackingError(QFactoryError):
    """The MLflow tracking store refused or could not be reached."""


def _mlflow() -> tuple[Any, type[Exception]]:
    """MLflow's client class and exception type, or a one-line MissingExtra."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingExtra(
            f"runs export-mlflow needs MLflow, which is not installed; install it with `{INSTALL}`"
        ) from None
    return MlflowClient, MlflowException


@contextmanager
def _file_store_allowed(tracking_uri: str) -> Iterator[None]:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set; a `file:` URI on
    the command line is that explicit opt-in, so it is allowed for the export only."""
    local = urlparse(tracking_uri).scheme in ("", "file")
    previous = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if local and previous is None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if local and previous is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def export_mlflow(
    runs: list[Run], tracking_uri: str, experiment: str = "qfactory", reporter: Reporter = SILENT
) -> list[dict[str, Any]]:
    """Log each run to MLflow; returns, per run, the MLflow run id and what was logged."""
    records = [checked_record(run) for run in runs]  # every run is read (and checked) before anything is logged
    ledger = ledger_metrics(records)
    contents = [_contents(run, record, ledger[record.run_id]) for run, record in zip(runs, records)]
    client_class, mlflow_error = _mlflow()
    with _file_store_allowed(tracking_uri):
        try:
            client = client_class(tracking_uri=tracking_uri)
            experiment_id = _experiment(client, experiment)
            results = []
            for run, content in zip(runs, contents):
                results.append(_export_one(client, experiment_id, run, content))
                reporter.info(
                    f"export-mlflow: {run.id} -> MLflow run {results[-1]['mlflow_run_id']}"
                    f"{' (updated)' if results[-1]['reused'] else ''}"
                )
            return results
        except mlflow_error as exc:
            first = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
            raise TrackingError(
                f"--tracking-uri {shown(tracking_uri)}: MLflow refused the export ({first}); "
                "check the URI (file:///path/mlruns, sqlite:///mlflow.db, http://host:5000)"
            ) from None


def _contents(run: Run, record: RunRecord, ledger: dict[str, float]) -> dict[str, Any]:
    manifest, metrics = record.manifest, record.metrics
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return {
        "params": {_key(k): _param_value(v) for k, v in flatten(read_recipe(run)).items()},
        "metrics": {_key(k): v for k, v in {**numeric(flatten(metrics)), **ledger}.items()},
        "tags": {
            TAG: run.id,
            "mlflow.runName": run.id,
            "qfactory.dataset": str(dataset.get("name")),
            "qfactory.path": str(run.path),
        },
        "created_ms": _millis(manifest.get("created")),
        "epochs": _epoch_metrics(run.path / "model") + _epoch_metrics(run.path / "pretrain", "pretrain."),
    }


def _epoch_metrics(model_dir: Path, stage: str = "") -> list[tuple[int, dict[str, float]]]:
    """(epoch, {`epoch.<key>`: value}) from every history.json under the model folder; lists (expert usage per
    layer and expert) become numbered keys. A folder below model/ (a member of an ensemble) joins the prefix;
    `stage` goes before it (a pretrain run's loop history: `pretrain.epoch.<key>`)."""
    out = []
    for path in sorted(model_dir.rglob("history.json")) if model_dir.is_dir() else []:
        where = ".".join(path.parent.relative_to(model_dir).parts)
        prefix = f"{stage}epoch.{where}." if where else f"{stage}epoch."
        for entry in json.loads(path.read_text()).get("epochs", []):
            values = {_key(prefix + k): v for k, v in _numbers(entry).items() if k != "epoch"}
            out.append((int(entry.get("epoch", len(out) + 1)), values))
    return out


def _numbers(value: Any, key: str = "") -> dict[str, float]:
    """Finite numbers of a nested dict/list, by dotted key (list items by index)."""
    if isinstance(value, dict):
        items = value.items()
        return {k: v for name, item in items for k, v in _numbers(item, f"{key}.{name}" if key else name).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{key}.{i}").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return {key: float(value)}
    return {}


def _key(key: str) -> str:
    return _UNSAFE_KEY.sub("_", key)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _PARAM_VALUE_MAX else text[: _PARAM_VALUE_MAX - 1] + "…"


def _millis(created: Any) -> int | None:
    import datetime as dt

    try:
        return int(dt.datetime.fromisoformat(str(created)).timestamp() * 1000)
    except ValueError:
        return None


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _export_one(client: Any, experiment_id: str, run: Run, content: dict[str, Any]) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    existing = client.search_runs([experiment_id], filter_string=f"tags.`{TAG}` = '{run.id}'", max_results=1)
    if existing:
        mlflow_run = existing[0]
    else:
        mlflow_run = client.create_run(
            experiment_id, start_time=content["created_ms"], tags=content["tags"], run_name=run.id
        )
    run_id = mlflow_run.info.run_id
    old_params, old_metrics = mlflow_run.data.params, mlflow_run.data.metrics
    params = [Param(k, v) for k, v in content["params"].items() if k not in old_params]
    metrics = [
        Metric(k, v, content["created_ms"] or 0, 0) for k, v in content["metrics"].items() if old_metrics.get(k) != v
    ]
    # epoch histories are logged once (a committed model's history never changes), step = epoch
    metrics += [
        Metric(k, v, content["created_ms"] or 0, epoch)
        for epoch, values in content["epochs"]
        for k, v in values.items()
        if k not in old_metrics
    ]
    for start in range(0, max(len(params), len(metrics)), _BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _BATCH], params=params[start : start + _BATCH])
    artifacts = _log_artifacts(client, run_id, run.path)
    client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run.id,
        "mlflow_run_id": run_id,
        "experiment_id": experiment_id,
        "reused": bool(existing),
        "params_logged": len(params),
        "metrics_logged": len(metrics),
        "artifacts": artifacts,
    }


def _log_artifacts(client: Any, mlflow_run_id: str, run_dir: Path) -> list[str]:
    """The run's small files: recipe, manifest, metrics, model folder, backtest report."""
    logged = []
    for name in ("recipe.toml", "manifest.json", "metrics.json"):
        if (run_dir / name).is_file():
            client.log_artifact(mlflow_run_id, str(run_dir / name))
            logged.append(name)
    if (run_dir / "model").is_dir():
        client.log_artifacts(mlflow_run_id, str(run_dir / "model"), "model")
        logged.append("model/")
    report = (
        sorted(p for p in (run_dir / "backtest").glob("*") if p.is_file() and p.suffix != ".parquet")
        if (run_dir / "backtest").is_dir()
        else []
    )
    for path in report:
        client.log_artifact(mlflow_run_id, str(path), "backtest")
        logged.append(f"backtest/{path.name}")
    return logged
