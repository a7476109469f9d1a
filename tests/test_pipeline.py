"""End to end through the CLI on a small synthetic panel: run, chaining, errors, determinism."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.cli import app
from quant_cli.io import read_json

SMALL = """
[run]
name = "t"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 8
bars = 400
[model.params]
n_estimators = 40
min_data_in_leaf = 20
[train]
threads = 1
"""

REQUIRED_METRICS = {
    "val": ["ic", "rank_ic"],
    "test": ["ic", "rank_ic"],
    "backtest": ["sharpe", "max_drawdown", "annual_return"],
}


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def invoke_ok(runner, args) -> Path:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must carry only the run directory"
    return Path(lines[0])


def test_run_produces_the_whole_run_directory(runner, recipe):
    run = invoke_ok(runner, ["run", "--recipe", str(recipe), "--quiet"])
    assert run.is_dir() and run.parent == Path("runs").resolve()
    for name in [
        "recipe.toml",
        "manifest.json",
        "metrics.json",
        "predictions.parquet",
        "log.jsonl",
        "split/boundaries.json",
        "split/counts.json",
        "split/scaler.json",
        "model/model.txt",
        "backtest/equity.parquet",
        "backtest/weights.parquet",
        "backtest/trades.parquet",
        "backtest/metrics.json",
        "backtest/report.html",
    ]:
        assert (run / name).is_file(), name
    metrics = read_json(run / "metrics.json")
    for section, keys in REQUIRED_METRICS.items():
        for key in keys:
            assert isinstance(metrics[section][key], float), f"{section}.{key}"
    manifest = read_json(run / "manifest.json")
    assert [s for s, v in manifest["stages"].items() if v["status"] == "done"] == [
        "ingest",
        "split",
        "train",
        "backtest",
    ]
    assert set(manifest["fingerprints"]) >= {"recipe", "features", "dataset"}
    preds = pl.read_parquet(run / "predictions.parquet")
    assert preds.columns == ["symbol", "ts", "segment", "score", "label"]
    assert set(preds["segment"].unique()) == {"val", "test"}
    scaler = read_json(run / "split" / "scaler.json")
    assert scaler["kind"] == "zscore" and len(scaler["center"]) >= 15


def test_stages_chain_through_run_ids(runner, recipe):
    invoke_ok(
        runner,
        ["ingest", "--source", "synthetic", "--dataset", "syn", "--symbols", "8", "--bars", "400", "--seed", "1", "-q"],
    )
    run = invoke_ok(runner, ["split", "--recipe", str(recipe), "-q"])
    assert (run / "split").is_dir() and not (run / "model").exists()
    assert invoke_ok(runner, ["train", "--run", str(run), "-q"]) == run
    result = runner.invoke(app, ["backtest", "--run", "latest", "--json", "-q"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["path"] == str(run) and "sharpe" in payload["backtest"]
    again = runner.invoke(app, ["train", "--run", run.name])
    assert again.exit_code == 2
    assert "already has a model; runs are never overwritten" in again.stderr


def test_same_recipe_same_predictions(runner, recipe):
    first = invoke_ok(runner, ["run", "--recipe", str(recipe), "-q"])
    second = invoke_ok(runner, ["train", "--recipe", str(recipe), "-q"])
    assert first != second
    a, b = (pl.read_parquet(r / "predictions.parquet") for r in (first, second))
    assert a.equals(b)


def test_bad_recipe_leaves_no_run_directory(runner, recipe):
    result = runner.invoke(app, ["run", "--recipe", str(recipe), "--set", "model.params.num_leafs=3"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(
        "error: model.params.num_leafs is not a parameter of model 'lightgbm' (did you mean 'num_leaves'?)"
    )
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_missing_dataset_is_exit_2(runner, recipe):
    # without a data.source to ingest it from (with one, the first command ingests it: test_first_command.py)
    sets = ["--set", "data.dataset=nope", "--set", 'data.source=""']
    result = runner.invoke(app, ["train", "--recipe", str(recipe), *sets])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: dataset 'nope' not found in")
    assert not any(Path("runs").glob("*")) if Path("runs").exists() else True


def test_unknown_run_is_exit_2(runner):
    result = runner.invoke(app, ["backtest", "--run", "latest"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --run latest: no runs under")


def test_lightgbm_learns_the_planted_signal(runner, recipe):
    """On a panel with a planted drift, the test-segment IC is clearly positive."""
    args = [
        "run",
        "--recipe",
        str(recipe),
        "-q",
        "--set",
        "data.synthetic.symbols=20",
        "--set",
        "data.synthetic.bars=1000",
        "--set",
        "data.synthetic.signal=0.3",
        "--set",
        "model.params.n_estimators=300",
        "--set",
        "model.params.num_leaves=7",
        "--set",
        "model.params.min_data_in_leaf=300",
        "--set",
        "model.params.learning_rate=0.02",
    ]
    metrics = read_json(invoke_ok(runner, args) / "metrics.json")
    assert metrics["test"]["rank_ic"] > 0.03 and metrics["test"]["ic"] > 0.03


@pytest.mark.parametrize("method", ["purged_kfold", "cpcv"])
def test_cross_validation_methods_write_folds_and_oof(runner, recipe, method):
    args = [
        "train",
        "--recipe",
        str(recipe),
        "-q",
        "--set",
        f"split.method={method}",
        "--set",
        "split.folds=3",
        "--set",
        "split.groups=4",
        "--set",
        "split.test_groups=2",
        "--set",
        "split.sample_weight=uniqueness",
        "--set",
        "label.horizon=3",
    ]
    invoke_ok(runner, ["ingest", "--source", "synthetic", "--dataset", "syn", "--symbols", "8", "--bars", "400", "-q"])
    run = invoke_ok(runner, args)
    folds = read_json(run / "split" / "folds.json")
    assert folds["n_splits"] == (3 if method == "purged_kfold" else 6)
    assert folds["n_paths"] == (1 if method == "purged_kfold" else 3)
    assert all(f["purged"] > 0 for f in folds["folds"][1:])
    oof = pl.read_parquet(run / "cv" / "oof.parquet")
    assert oof.columns == ["symbol", "ts", "fold", "group", "score", "label"]
    metrics = read_json(run / "metrics.json")["cv"]
    assert (
        len(metrics["path_ic" if method == "cpcv" else "fold_ic"])
        == folds["n_paths" if method == "cpcv" else "n_splits"]
    )
    weights = pl.read_parquet(run / "split" / "weights.parquet")
    assert weights["weight"].mean() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["direction", "triple_barrier"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_classification_labels_run_end_to_end(runner, recipe, kind, task):
    args = [
        "run",
        "--recipe",
        str(recipe),
        "-q",
        "--set",
        f"label.kind={kind}",
        "--set",
        "label.horizon=5",
        "--set",
        "label.threshold=0.01",
        "--set",
        f"model.task={task}",
    ]
    run = invoke_ok(runner, args)
    predictions = pl.read_parquet(run / "predictions.parquet")
    assert set(predictions["label"].unique()) <= {-1.0, 0.0, 1.0}
    assert read_json(run / "split" / "boundaries.json")["label"] == kind
    test = read_json(run / "metrics.json")["test"]
    if task == "classification":
        probs = predictions.select(pl.col("^p_.*$"))
        assert probs.columns == ["p_-1", "p_0", "p_1"] if kind == "direction" else len(probs.columns) >= 2
        assert (probs.sum_horizontal() - 1).abs().max() < 1e-6
        assert 0 <= test["accuracy"] <= 1 and test["log_loss"] > 0 and 0 <= test["auc"] <= 1
    else:
        assert "accuracy" not in test


def test_classification_task_needs_class_labels(runner, recipe):
    result = runner.invoke(app, ["train", "--recipe", str(recipe), "--set", "model.task=classification"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "error: model.task = 'classification' needs label.kind 'direction' or 'triple_barrier', got 'forward_return'"
    )


def test_split_then_train_reuses_stored_weights_and_scaler(runner, recipe):
    invoke_ok(runner, ["ingest", "--source", "synthetic", "--dataset", "syn", "--symbols", "8", "--bars", "400", "-q"])
    overrides = [
        "--set",
        "split.sample_weight=uniqueness",
        "--set",
        "split.time_decay=0.5",
        "--set",
        "preprocess.scaler=rank_gauss",
        "--set",
        'split.embargo="10d"',
    ]
    run = invoke_ok(runner, ["split", "--recipe", str(recipe), "-q", *overrides])
    invoke_ok(runner, ["train", "--run", str(run), "-q"])
    direct = invoke_ok(runner, ["train", "--recipe", str(recipe), "-q", *overrides])
    a, b = (pl.read_parquet(r / "predictions.parquet") for r in (run, direct))
    assert a.equals(b)


def test_cuda_unavailable_falls_back_to_cpu_with_a_warning(runner, recipe):
    result = runner.invoke(app, ["run", "--recipe", str(recipe), "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: ") == 1 and "CUDA is not available" in result.stderr
    run = Path(result.stdout.strip())
    assert read_json(run / "manifest.json")["device"] == "cpu"
    assert 'device = "cuda"' in (run / "recipe.toml").read_text()


def test_strict_device_fails_before_any_run_exists(runner, recipe):
    result = runner.invoke(app, ["run", "--recipe", str(recipe), "--device", "cuda", "--strict-device"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: train.device 'cuda' was requested but CUDA is not available (no GPU, or torch was built without CUDA); "
        "use --device cpu or drop --strict-device"
    )
    bad = runner.invoke(app, ["train", "--recipe", str(recipe), "--device", "gpu"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: train.device 'gpu' is not a device; allowed:")
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


@pytest.mark.parametrize(("model", "encoding"), [("lightgbm", "index"), ("linear", "one_hot"), ("mlp", "embedding")])
def test_global_models_with_symbol_encoding(runner, recipe, model, encoding):
    args = [
        "run",
        "--recipe",
        str(recipe),
        "-q",
        "--set",
        f"model.name={model}",
        "--set",
        f"model.symbol_encoding={encoding}",
    ]
    if model != "lightgbm":
        args += ["--set", "model.params={}"]
    if model == "mlp":
        args += ["--set", "train.epochs=2"]
    run = invoke_ok(runner, args)
    assert read_json(run / "model" / "model.json")["symbol_encoding"] == encoding
    assert pl.read_parquet(run / "predictions.parquet")["score"].is_finite().all()


def test_split_reports_cpcv_splits_and_paths(runner, recipe):
    invoke_ok(runner, ["ingest", "--source", "synthetic", "--dataset", "syn", "--symbols", "8", "--bars", "400", "-q"])
    result = runner.invoke(
        app,
        [
            "split",
            "--recipe",
            str(recipe),
            "--json",
            "--set",
            "split.method=cpcv",
            "--set",
            "split.groups=6",
            "--set",
            "split.test_groups=2",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["cv"] == {"n_splits": 15, "n_paths": 5}  # C(6, 2) splits, C(5, 1) paths
    assert "cpcv with 15 splits and 5 backtest path(s)" in result.stderr


def test_scaler_statistics_are_bit_identical_across_fits():
    """Same training rows → the same scaler state to the last bit (polars' parallel sums of a
    large multi-chunk column were not: same seed, different predictions)."""
    from quant_cli.pipeline.preprocess import fit_preprocess

    rng = np.random.default_rng(0)
    chunks = [pl.DataFrame({"f": rng.normal(size=100_000) * 1e3 + rng.normal(size=100_000)}) for _ in range(30)]
    frame = pl.concat(chunks, rechunk=False)
    cfg = {"scaler": "zscore", "fill": "zero", "clip": 5.0}
    states = {json.dumps(fit_preprocess(frame, ["f"], cfg), sort_keys=True) for _ in range(8)}
    assert len(states) == 1
