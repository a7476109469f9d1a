"""`qfactory runs export-mlflow` against a real MLflow file store, read back through the MLflow client."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from quant_cli.cli import app

SMALL = """
[run]
name = "exp"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 5
bars = 300
[model.params]
n_estimators = 20
min_data_in_leaf = 20
[train]
threads = 1
"""

SMALL_MOE = """
[run]
name = "moe"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 3
bars = 200
[preprocess]
fill = "zero"
[model]
name = "moe_transformer"
[model.params]
seq_len = 4
d_model = 8
heads = 2
layers = 1
experts = 2
top_k = 1
[train]
threads = 1
epochs = 3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One real run (ingest → split → train → backtest), copied into each test's runs home."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("real")
    (root / "r.toml").write_text(SMALL)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--recipe",
            str(root / "r.toml"),
            "--data-dir",
            str(root / "data"),
            "--runs-dir",
            str(root / "runs"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


@pytest.fixture
def run_id(trained: Path) -> str:
    shutil.copytree(trained, Path("runs") / trained.name)
    return trained.name


def test_export_logs_params_metrics_artifacts_and_is_idempotent(runner, run_id, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    first = runner.invoke(app, ["runs", "export-mlflow", run_id, "--tracking-uri", uri, "--json"])
    assert first.exit_code == 0, first.output
    (result,) = json.loads(first.stdout)
    assert result["run_id"] == run_id and not result["reused"]
    monkey_env = pytest.MonkeyPatch()
    monkey_env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the file store back needs the opt-in too
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("qfactory")
        (logged,) = client.search_runs([experiment.experiment_id])
        assert logged.info.run_id == result["mlflow_run_id"] and logged.data.tags["qfactory.run_id"] == run_id
        params, metrics = logged.data.params, logged.data.metrics
        assert (
            params["model.name"] == "lightgbm"
            and params["model.params.n_estimators"] == "20"
            and params["run.name"] == "exp"
        )
        recipe_metrics = json.loads((Path("runs") / run_id / "metrics.json").read_text())
        assert metrics["test.ic"] == pytest.approx(recipe_metrics["test"]["ic"])
        assert metrics["backtest.periods"] == recipe_metrics["backtest"]["periods"]
        top = {a.path for a in client.list_artifacts(logged.info.run_id)}
        assert {"recipe.toml", "manifest.json", "metrics.json", "model", "backtest"} <= top
        assert {a.path for a in client.list_artifacts(logged.info.run_id, "backtest")} == {
            "backtest/analysis.json",
            "backtest/metrics.json",
            "backtest/report.html",
        }
        assert client.list_artifacts(logged.info.run_id, "model")

        again = runner.invoke(app, ["runs", "export-mlflow", "latest", "--tracking-uri", uri, "--json"])
        assert again.exit_code == 0, again.output
        (second,) = json.loads(again.stdout)
        assert second["reused"] and second["mlflow_run_id"] == result["mlflow_run_id"]
        assert second["params_logged"] == 0 and second["metrics_logged"] == 0
        assert len(client.search_runs([experiment.experiment_id])) == 1
        assert len(client.get_metric_history(logged.info.run_id, "test.ic")) == 1
    finally:
        monkey_env.undo()


def test_without_mlflow_it_says_how_to_install_it(runner, run_id, monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    result = runner.invoke(app, ["runs", "export-mlflow", run_id, "--tracking-uri", "file:///tmp/never"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: runs export-mlflow needs MLflow, which is not installed; install "
        "it with `pip install 'qfactory[mlflow]'`"
    ]


def test_no_tracking_uri_and_unknown_run_are_one_line(runner, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["runs", "export-mlflow", "latest"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: runs export-mlflow: no tracking URI; pass --tracking-uri URI "
        "(e.g. file:///tmp/mlruns) or set MLFLOW_TRACKING_URI"
    ]
    result = runner.invoke(app, ["runs", "export-mlflow", "latest", "--tracking-uri", "file:///tmp/never"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: run latest: no runs under {Path('runs').resolve()}; start one with `qfactory train --recipe R`"
    ]


def test_a_uri_mlflow_refuses_is_one_line(runner, run_id):
    result = runner.invoke(app, ["runs", "export-mlflow", run_id, "--tracking-uri", "bogus://x"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --tracking-uri 'bogus://x': MLflow refused the export (")
    assert line.endswith("check the URI (file:///path/mlruns, sqlite:///mlflow.db, http://host:5000)")


def test_a_real_run_lists_shows_and_compares(runner, run_id):
    """The listing reads what the pipeline really writes (these tests share one real run)."""
    (row,) = json.loads(runner.invoke(app, ["runs", "ls", "--json"]).stdout)
    assert (row["run_id"], row["name"], row["dataset"], row["model"]) == (run_id, "exp", "syn", "lightgbm")
    assert row["committed"] == ["ingest", "split", "train", "backtest"] and row["state"] == "ok"
    assert row["segment"] == "test" and isinstance(row["test_ic"], float)
    info = json.loads(runner.invoke(app, ["runs", "show", "latest", "--json"]).stdout)
    assert set(info["stages"]) == {"ingest", "split", "train", "backtest"} and info["stages"]["train"]["seconds"] > 0
    assert info["dataset_version"] == 0 and info["model"] == "lightgbm"
    shutil.copytree(Path("runs") / run_id, Path("runs") / "copy")
    result = runner.invoke(app, ["runs", "compare", run_id, "copy", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["recipe"] == {} and out["metrics"]["test.ic"][0] == out["metrics"]["test.ic"][1]


def test_export_carries_torch_training_telemetry_per_epoch(runner, tmp_path):
    """grad/param norms, learning rate, expert usage and validation PnL/turnover/exposure of each epoch become
    MLflow metric histories (step = epoch)."""
    from mlflow.tracking import MlflowClient

    recipe = tmp_path / "moe.toml"
    recipe.write_text(SMALL_MOE)
    trained = runner.invoke(
        app,
        [
            "run",
            "--recipe",
            str(recipe),
            "--data-dir",
            str(tmp_path / "data"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--quiet",
        ],
    )
    assert trained.exit_code == 0, trained.output
    run = Path(trained.stdout.strip())
    history = json.loads((run / "model" / "history.json").read_text())["epochs"]
    uri = (tmp_path / "mlruns").as_uri()
    result = runner.invoke(app, ["runs", "export-mlflow", str(run), "--tracking-uri", uri, "--json"])
    assert result.exit_code == 0, result.output
    monkey_env = pytest.MonkeyPatch()
    monkey_env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        (logged,) = client.search_runs([client.get_experiment_by_name("qfactory").experiment_id])
        for key, pick in [
            ("epoch.grad_norm", lambda h: h["grad_norm"]),
            ("epoch.lr", lambda h: h["lr"]),
            ("epoch.param_norm", lambda h: h["param_norm"]),
            ("epoch.expert_usage.0.1", lambda h: h["expert_usage"][0][1]),
            ("epoch.val_pnl", lambda h: h["val_pnl"]),  # issue 20 §5: the trading telemetry on validation
            ("epoch.val_turnover", lambda h: h["val_turnover"]),
            ("epoch.val_exposure", lambda h: h["val_exposure"]),
        ]:
            points = sorted(client.get_metric_history(logged.info.run_id, key), key=lambda m: m.step)
            assert [(m.step, m.value) for m in points] == [(h["epoch"], pytest.approx(pick(h))) for h in history], key
        again = runner.invoke(app, ["runs", "export-mlflow", str(run), "--tracking-uri", uri, "--json"])
        assert json.loads(again.stdout)[0]["metrics_logged"] == 0  # idempotent: the histories are not logged twice
        assert len(client.get_metric_history(logged.info.run_id, "epoch.grad_norm")) == 3
    finally:
        monkey_env.undo()
