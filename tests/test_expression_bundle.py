"""Factor expressions end to end (issue 23 §1): a run trained on expressions stores them in its
versioned feature table (the fingerprint covers their text), its bundle carries them with a lookback
covering their windows, and `qfactory predict` and the server recompute them from the bundle and
give the run's own scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from serving import LiveServer, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.features.store import feature_fingerprint
from quant_cli.io import read_json, write_json_atomic
from quant_cli.pipeline.lookback import tail_bars
from quant_cli.recipe import load_recipe
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load
from quant_cli.serve.contents import REBUILD
from quant_cli.serve.loaded import records
from quant_cli.serve.manifest import MANIFEST, bundle_id, files_of, sha256

EXPRESSIONS = {
    "mom5": "$close / Ref($close, 5) - 1",
    "vcorr10": "Corr($close, Log($volume + 1), 10)",
    "trend": "Slope($close, 20) / Mean($close, 20)",
    "ema_gap": "EMA($close, 8) / $close - 1",  # recursive: the bundle's lookback is measured
}
EXTRA = (
    "features.sets=[]",
    'features.include=["ret_5"]',
    *(f"features.expressions.{name}={text!r}".replace("'", '"') for name, text in EXPRESSIONS.items()),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("expr"), extra=EXTRA)
    return trained, stages.bundle_existing(trained.run, trained.data_dir).bundle


def test_the_run_trains_on_the_expressions(trained):
    run, bundle = trained
    pipeline = read_json(bundle / "pipeline.json")
    assert pipeline["features"] == ["ret_5", "ema_gap", "mom5", "trend", "vcorr10"]  # built-ins, then by name
    assert pipeline["expressions"] == {name: EXPRESSIONS[name] for name in sorted(EXPRESSIONS)}
    assert pipeline["lookback"]["trend"] == 20 and pipeline["lookback"]["mom5"] == 6


def test_the_feature_version_records_the_expressions(runner, trained):
    run, _ = trained
    versions = runner.invoke(app, ["features", "ls", "--json", "--data-dir", str(run.data_dir)])
    (version,) = json.loads(versions.stdout)
    shown = runner.invoke(app, ["features", "show", version["fingerprint"], "--data-dir", str(run.data_dir)])
    assert shown.exit_code == 0, shown.output
    assert [line for line in shown.stdout.splitlines() if line.startswith("expression ")] == [
        f"expression {name} = {EXPRESSIONS[name]}" for name in sorted(EXPRESSIONS)
    ]


def test_the_bundle_lookback_covers_the_expression_windows(trained):
    _, bundle = trained
    measured = read_json(bundle / "lookback.json")
    need = read_json(bundle / "input_schema.json")["x-qfactory"]["required_bars"]
    assert measured["bars"]["trend"] >= 20 and measured["bars"]["vcorr10"] >= 10 and measured["bars"]["mom5"] >= 6
    assert measured["bars"]["ema_gap"] > 8  # converges over more bars than its span
    assert need >= max(measured["bars"].values())


def test_predict_and_the_server_give_the_run_scores(runner, tmp_path, trained):
    run, bundle = trained
    need = read_json(bundle / "input_schema.json")["x-qfactory"]["required_bars"]
    predictions = pl.read_parquet(run.run.path / "predictions.parquet").filter(pl.col("segment") == "test")
    bars = load_bars(run.data_dir, "p").with_columns(pl.col("symbol").cast(pl.String))
    moments = predictions["ts"].unique().sort()
    with LiveServer(create_app(load(bundle))) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        for t in (moments[0], moments[-1]):
            window = tail_bars(bars.filter(pl.col("ts") <= t), need)
            source, out = tmp_path / "window.parquet", tmp_path / "scores.parquet"
            window.write_parquet(source)
            result = runner.invoke(
                app, ["predict", "--bundle", str(bundle), "--source", str(source), "--out", str(out)]
            )
            assert result.exit_code == 0, result.output
            expected = predictions.filter(pl.col("ts") == t).sort("symbol")["score"].to_numpy()
            np.testing.assert_allclose(pl.read_parquet(out)["score"].to_numpy(), expected, rtol=1e-6, atol=0)
            served = client.post("/predict", json={"bars": records(window)}).json()["predictions"]
            np.testing.assert_allclose([p["score"] for p in served], expected, rtol=1e-6, atol=0)


def test_the_feature_fingerprint_covers_the_expression_text():
    section = {"sets": [], "expressions": dict(EXPRESSIONS)}
    changed = {"sets": [], "expressions": {**EXPRESSIONS, "mom5": "$close / Ref($close, 4) - 1"}}
    base = feature_fingerprint(section, "hash", {})
    assert feature_fingerprint(changed, "hash", {}) != base
    assert feature_fingerprint({"sets": [], "expressions": dict(reversed(EXPRESSIONS.items()))}, "hash", {}) == base


def test_a_resealed_bundle_with_a_look_ahead_is_refused(runner, tmp_path, trained):
    """pipeline.json is input too: a formula edited into a look-ahead (and the manifest re-hashed, as
    anyone who can write the folder can) is parsed and refused when the bundle loads."""
    _, bundle = trained
    forged = Path(shutil.copytree(bundle, tmp_path / "b"))
    pipeline = read_json(forged / "pipeline.json")
    pipeline["expressions"]["mom5"] = "$close / Ref($close, -5) - 1"
    write_json_atomic(forged / "pipeline.json", pipeline)
    manifest = read_json(forged / MANIFEST)
    manifest["files"] = {name: sha256(forged / name) for name in files_of(forged)}
    manifest["bundle_id"] = bundle_id(manifest["source_run"], manifest["files"])
    write_json_atomic(forged / MANIFEST, manifest)
    result = runner.invoke(app, ["bundle", "verify", str(forged)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: bundle {forged}: pipeline.json: features.expressions.mom5 = '$close / Ref($close, -5) - 1': "
        "Ref($close, -5) reads 5 bar(s) past t (a negative offset is a look into the future); use an offset >= 0, "
        f"e.g. Ref($close, 5); {REBUILD}"
    ]


def test_an_expression_over_alternative_data_trains_but_is_not_bundled(runner, tmp_path):
    """`$sentiment` (an extra numeric column of the dataset) is an ordinary input in training; a scoring
    request carries only the standard bar columns, so `bundle` refuses the run in one line and writes nothing."""
    bars = generate(symbols=3, bars=300, seed=3).with_columns(
        sentiment=pl.col("close").log().diff().fill_null(0.0).over("symbol") * 10
    )
    write_store(tmp_path / "data", "p", bars, "test")
    recipe = load_recipe(
        None,
        [
            'data.dataset="p"',
            "features.sets=[]",
            'features.include=["ret_5"]',
            'features.expressions.s5="Mean($sentiment, 5)"',
            "train.threads=1",
            "model.params.n_estimators=10",
        ],
    )
    run = stages.train_new(recipe, tmp_path / "data", tmp_path / "runs").run
    assert read_json(run.path / "split" / "pipeline.json")["expressions"] == {"s5": "Mean($sentiment, 5)"}
    result = runner.invoke(app, ["bundle", "--run", str(run.path), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: bundle: feature 's5' reads column 'sentiment', which a scoring request cannot carry (bars have "
        "adj_close, close, high, low, open, volume, vwap); drop the feature from the recipe to bundle the model"
    ]
    assert not (run.path / "bundle").exists()
