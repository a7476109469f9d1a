"""Factor plugins in runs, bundles and the audit (issue 23 §2 and §3).

A run carries its plugins' source (split/pipeline.json), so a bundle does too, and its lookback covers
the declared window; `predict`, `serve`, `/reload` and `bundle verify` refuse such a bundle without
--trust-plugins (one line, exit 2 / a 422). The audit passes a clean plugin run and fails (exit 3) a
run built on a leaky plugin with the build-time check skipped by the test-only switch.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import polars as pl
import pytest
from serving import BASE, FAST, LiveServer, store
from typer.testing import CliRunner

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.synthetic import generate
from quant_cli.errors import RunError
from quant_cli.features import plugin_check
from quant_cli.io import read_json
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import Run
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load

ROOT = str(Path(__file__).resolve().parents[1])
CLEAN = """
    from quant_cli import factor


    @factor(window=15)
    def ma15_gap(bars):
        return bars["close"].rolling_mean(15) / bars["close"] - 1
"""
LEAKY = """
    def next_return(bars):
        return bars["close"].shift(-1) / bars["close"] - 1
"""
REFUSED = (
    "bundle {bundle}: it carries factor plugin code (factors.py), which runs when the bundle loads; "
    "pass --trust-plugins only for bundles you made yourself"
)


def train_with(root: Path, data_dir: Path, source: str) -> Run:
    (root / "factors.py").write_text(textwrap.dedent(source))
    overrides = [
        *BASE,
        *FAST["lightgbm"],
        "features.sets=[]",
        'features.include=["ret_5", "ret_10"]',
        f'features.plugins=["{root / "factors.py"}"]',
    ]
    return stages.train_new(load_recipe(None, overrides), data_dir, root / "runs").run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return store(tmp_path_factory.mktemp("plugin-runs"))


@pytest.fixture(scope="module")
def clean(data_dir, tmp_path_factory):
    """A clean plugin run and its bundle, built after the plugin file was edited (the run's code is carried)."""
    root = tmp_path_factory.mktemp("clean")
    run = train_with(root, data_dir, CLEAN)
    carried = read_json(run.path / "split" / "pipeline.json")["plugins"]
    (root / "factors.py").write_text(textwrap.dedent(CLEAN).replace("rolling_mean(15)", "rolling_mean(3)"))
    bundle = stages.bundle_existing(run, data_dir).bundle
    (root / "factors.py").write_text(textwrap.dedent(CLEAN))  # restored: the audit refits from the file
    return run, bundle, carried


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args])
    return result.exit_code, result.stdout, result.stderr


def test_the_run_and_its_bundle_carry_the_plugin_source(clean):
    run, bundle, carried = clean
    assert [p["file"] for p in carried] == ["factors.py"] and "rolling_mean(15)" in carried[0]["source"]
    pipeline = read_json(bundle / "pipeline.json")
    assert pipeline["plugins"] == carried  # the run's code, not the edited file's
    assert pipeline["features"] == ["ret_5", "ret_10", "ma15_gap"]
    assert pipeline["lookback"]["ma15_gap"] == 15 and pipeline["warmup"]["ma15_gap"] >= 15
    assert read_json(bundle / "input_schema.json")["x-qfactory"]["required_bars"] >= 15
    manifest = read_json(bundle / "manifest.json")
    assert "pipeline.json" in manifest["files"]  # the source is covered by the bundle's hashes


def test_predict_and_verify_refuse_a_plugin_bundle_unless_trusted(clean, data_dir, tmp_path):
    _, bundle, _ = clean
    out = tmp_path / "scores.parquet"
    args = ["predict", "--bundle", str(bundle), "--source", "p", "--out", str(out), "--data-dir", str(data_dir)]
    code, stdout, stderr = cli(*args)
    assert (code, stdout, stderr) == (2, "", f"error: {REFUSED.format(bundle=bundle)}\n")
    assert not out.exists()
    assert cli("bundle", "verify", str(bundle))[2] == f"error: {REFUSED.format(bundle=bundle)}\n"
    code, _, stderr = cli(*args, "--trust-plugins", "--quiet")
    assert code == 0, stderr
    scores = pl.read_parquet(out)
    assert scores.height == 4 and scores["score"].is_finite().all()
    assert cli("bundle", "verify", str(bundle), "--trust-plugins", "--quiet")[0] == 0


def test_serve_and_reload_refuse_a_plugin_bundle_unless_trusted(clean):
    _, bundle, _ = clean
    code, _, stderr = cli("serve", "--bundle", str(bundle), "--host", "256.0.0.1")  # never binds, even if let in
    assert (code, stderr) == (2, f"error: {REFUSED.format(bundle=bundle)}\n")
    # A server started with trust for its first bundle only: a /reload payload cannot grant it.
    with LiveServer(create_app(load(bundle, trust_plugins=True))) as live, httpx.Client(base_url=live.url) as client:
        refused = client.post("/reload", json={"bundle": str(bundle)})
        assert refused.status_code == 422
        assert REFUSED.format(bundle=bundle) in refused.json()["error"]
        assert client.get("/ready").json()["ready"]
    with LiveServer(create_app(load(bundle, trust_plugins=True), trust_plugins=True)) as live:
        with httpx.Client(base_url=live.url) as client:
            assert client.post("/reload", json={"bundle": str(bundle)}).status_code == 200


def audit(run, data_dir: Path) -> tuple[int, dict, str]:
    code, stdout, stderr = cli(
        "audit", "--run", str(run.path), "--permutations", "0", "--json", "--quiet", "--data-dir", str(data_dir)
    )
    return code, json.loads(stdout), stderr


def test_the_audit_passes_a_clean_plugin_run(clean, data_dir):
    run, _, _ = clean
    code, payload, stderr = audit(run, data_dir)
    assert code == 0, stderr
    assert payload["audit"]["verdict"] == "pass" and payload["audit"]["checks"]["failed"] == 0


def test_the_audit_fails_a_run_built_on_a_leaky_plugin(data_dir, tmp_path, monkeypatch):
    with monkeypatch.context() as switch:
        switch.setenv(plugin_check.SKIP_ENV, "1")  # the test-only switch: the build would refuse the plugin
        run = train_with(tmp_path, data_dir, LEAKY)
    code, payload, stderr = audit(run, data_dir)  # the switch is off: the audit's verdict, not a refused refit
    report = payload["audit"]
    first = report["scoring"]["checks"][0]
    assert code == 3 and report["verdict"] == "fail" and not first["passed"]
    assert report["failure"].startswith(f"look-ahead: {first['name']}: ")  # names the failing look-ahead check
    assert first["first"]["ts"] == first["cutoff"]  # the bar at the cutoff read the first rewritten one
    assert stderr.splitlines()[0] == f"error: {report['failure']}"
    training = {c["name"]: c["passed"] for c in report["training"]["checks"]}
    assert training["training: training inputs"] is False  # the refit recomputed the plugin on rewritten bars


def test_the_audit_refuses_a_run_whose_plugin_file_changed(data_dir, tmp_path):
    run = train_with(tmp_path, data_dir, CLEAN)
    (tmp_path / "factors.py").write_text(textwrap.dedent(CLEAN).replace("rolling_mean(15)", "rolling_mean(14)"))
    code, payload, _ = audit(run, data_dir)
    assert code == 2
    assert payload["error"] == (
        f"run {run.id}: plugin factors.py changed since the run was made (its SHA-256 differs from the one in "
        "split/pipeline.json); restore the file to audit this run, or train a new run"
    )


def test_a_pipeline_sent_to_another_process_brings_its_plugin(clean, tmp_path):
    """Worker processes (walk-forward folds, tuning trials, feature groups) get pickled pipelines and plans:
    the carried source registers there, where the plugin file was never read."""
    run, _, _ = clean
    pipeline = FittedPipeline.from_json(read_json(run.path / "split" / "pipeline.json"))
    bars = generate(symbols=2, bars=60, seed=9)
    here = pipeline.compute(bars).select("symbol", "ts", "ma15_gap")
    (tmp_path / "pipeline.pkl").write_bytes(pickle.dumps(pipeline))
    bars.write_parquet(tmp_path / "bars.parquet")
    script = (
        "import pickle, sys, polars as pl; p = pickle.load(open(sys.argv[1], 'rb')); "
        "p.compute(pl.read_parquet(sys.argv[2])).select('symbol', 'ts', 'ma15_gap').write_parquet(sys.argv[3])"
    )
    files = [str(tmp_path / n) for n in ("pipeline.pkl", "bars.parquet", "there.parquet")]
    subprocess.run([sys.executable, "-c", script, *files], check=True, env={**os.environ, "PYTHONPATH": ROOT})
    there = pl.read_parquet(tmp_path / "there.parquet")
    assert there.equals(here) and there["ma15_gap"].null_count() == 2 * 14


def test_a_carried_source_must_match_its_hash(clean):
    run, _, _ = clean
    data = read_json(run.path / "split" / "pipeline.json")
    data["plugins"][0]["source"] += "\nimport os  # slipped in\n"
    with pytest.raises(RunError) as refused:
        FittedPipeline.from_json(data)
    assert str(refused.value) == "pipeline.json: the source of plugin factors.py does not match its sha256"
