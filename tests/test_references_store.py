"""`[features.references]` from another dataset of the home (issue 21 §5): the feature store reads its
pinned version and fingerprints its content, bad references are one line (exit 2), and a bundle
requires the reference symbols, scores only the others, and agrees with the training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.features import FeatureOptions, compute_features
from quant_cli.features.store import feature_table
from quant_cli.io import read_json
from quant_cli.pipeline.lookback import tail_bars
from quant_cli.recipe import load_recipe

REFS = '[features.references]\ndataset = "refs"\ncrypto = ["BTC-USD", "ETH-USD"]\n'
FEATURES = '[features]\nsets = []\ninclude = ["ret_5", "ret_10"]\nwindows = [5, 10]\n'


def _crypto(seed: int = 5) -> pl.DataFrame:
    """Two 7-day symbols (a bar every calendar day) spanning the equities' business days."""
    bars = generate(symbols=2, bars=560, frequency="24h", start="2015-01-02", seed=seed)
    return bars.with_columns(pl.col("symbol").replace({"S000": "BTC-USD", "S001": "ETH-USD"}))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("home") / "data"
    write_store(data_dir, "eq", generate(symbols=3, bars=400, seed=3), "test")  # business days only
    write_store(data_dir, "refs", _crypto(), "test")
    return data_dir


def _recipe_file(folder: Path, body: str = FEATURES + REFS, extra: str = "") -> Path:
    path = folder / "r.toml"
    path.write_text('[data]\ndataset = "eq"\n' + extra + body, encoding="utf-8")
    return path


def test_build_reads_the_reference_dataset_and_fingerprints_its_content(tmp_path, home, runner) -> None:
    result = runner.invoke(app, ["features", "--recipe", str(_recipe_file(tmp_path)), "--data-dir", str(home)])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["references"]["dataset"] == "refs" and spec["references"]["version"] == 0
    assert "refgrp_crypto_beta10" in spec["features"] and "ref_crypto_ETH-USD_corr5" in spec["features"]
    table = pl.read_parquet(sorted((folder / "table").glob("*.parquet")))
    assert sorted(table["symbol"].unique().to_list()) == ["S000", "S001", "S002"]  # references are not rows
    # the same values as the engine on the two datasets' bars (one implementation)
    recipe = load_recipe(_recipe_file(tmp_path))
    options = FeatureOptions.from_section(
        recipe["features"],
        "eq",
        bar_spacing="1d",
        reference_bars=load_bars(home, "refs").select("symbol", "ts", "close"),
    )
    direct = compute_features(load_bars(home, "eq"), spec["features"], options)
    assert direct.select(pl.exclude("symbol")).equals(table.select(pl.exclude("symbol")))
    assert table["ref_crypto_BTC-USD_corr10"].drop_nulls().len() > 300

    again = feature_table(recipe, home)
    assert again.cached and again.path == folder
    other = tmp_path / "other"
    write_store(other, "eq", load_bars(home, "eq"), "test")
    write_store(other, "refs", _crypto(seed=6), "test")  # the same equities, other reference bars
    changed = feature_table(recipe, other)
    assert changed.fingerprint != again.fingerprint
    assert not changed.frame["ref_crypto_BTC-USD_ret5"].equals(again.frame["ref_crypto_BTC-USD_ret5"])
    assert changed.frame["ret_5"].equals(again.frame["ret_5"])


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            FEATURES + REFS.replace('"ETH-USD"]', '"ETH-USD", "XRP-USD"]'),
            "error: features.references.crypto: 'XRP-USD' is not a symbol of dataset 'refs' (it has 2, e.g. "
            "['BTC-USD', 'ETH-USD']); ingest it there or remove it from the group",
        ),
        (
            FEATURES + REFS.replace('"refs"', '"nope"'),
            "error: features.references.dataset: there is no dataset 'nope' in data home {home}; ingest it first "
            "(`qfactory ingest --dataset nope ...`) or drop the key to read the references from 'eq'",
        ),
        (
            FEATURES + REFS.replace('dataset = "refs"\n', ""),
            "error: features.references.crypto: 'BTC-USD' is not a symbol of dataset 'eq' (it has 3, e.g. "
            "['S000', 'S001', 'S002']); ingest it there or remove it from the group",
        ),
        (
            FEATURES + '[features.references]\ndataset = "refs"\nS000 = ["S000"]\n'.replace('"S000"]', '"BTC-USD"]'),
            None,
        ),
    ],
    ids=["unknown_symbol", "missing_dataset", "not_in_own_dataset", "group_named_like_a_symbol"],
)
def test_bad_references_are_one_line_and_exit_2(tmp_path, home, runner, body, line) -> None:
    result = runner.invoke(app, ["features", "--recipe", str(_recipe_file(tmp_path, body)), "--data-dir", str(home)])
    if line is None:  # a group may be named anything letters and digits; it builds
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line.format(home=home)]
    assert result.stdout == ""


def test_bad_group_name_fails_when_the_recipe_loads(tmp_path, runner, home) -> None:
    path = _recipe_file(tmp_path, FEATURES + '[features.references]\nbig_tech = ["S000"]\n')
    result = runner.invoke(app, ["features", "--recipe", str(path), "--data-dir", str(home)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: recipe {path}: features.references: group name 'big_tech' must be 1-32 letters or digits starting "
        "with a letter (no '_': it separates the parts of a feature name); e.g. crypto"
    ]


def test_a_reference_dataset_of_another_frequency_is_refused(tmp_path, home, runner) -> None:
    hourly = tmp_path / "hourly"
    write_store(hourly, "eq", load_bars(home, "eq"), "test")
    crypto = generate(symbols=2, bars=100, frequency="1h", seed=5)
    write_store(
        hourly, "refs", crypto.with_columns(pl.col("symbol").replace({"S000": "BTC-USD", "S001": "ETH-USD"})), "test"
    )
    result = runner.invoke(app, ["features", "--recipe", str(_recipe_file(tmp_path)), "--data-dir", str(hourly)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: features.references.dataset: dataset 'refs' has 1h bars but dataset 'eq' has 1d bars; ingest the "
        "references at 1d (requests carry both at one frequency)"
    ]


def test_a_reference_also_built_as_a_symbol_is_refused(tmp_path, home, runner) -> None:
    clash = tmp_path / "clash"
    write_store(clash, "eq", load_bars(home, "eq"), "test")
    write_store(clash, "refs", _crypto().with_columns(pl.col("symbol").replace({"BTC-USD": "S001"})), "test")
    body = FEATURES + REFS.replace('"BTC-USD"', '"S001"')
    result = runner.invoke(app, ["features", "--recipe", str(_recipe_file(tmp_path, body)), "--data-dir", str(clash)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: features.references: 'S001' is both a symbol of dataset 'eq' being built and a reference from "
        "dataset 'refs'; leave it out of data.symbols or of the references"
    ]


# ---- a bundle: the references are required inputs, never scored, computed by the same code ---------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home):
    folder = tmp_path_factory.mktemp("run")
    extra = '[label]\nhorizon = 3\n[model]\nname = "lightgbm"\n[model.params]\nn_estimators = 20\n'
    extra += "min_data_in_leaf = 20\n[train]\nthreads = 1\nearly_stopping = 0\n"
    recipe = load_recipe(_recipe_file(folder, FEATURES + REFS, extra=extra))
    run = stages.train_new(recipe, home, folder / "runs").run
    return run, stages.bundle_existing(run, home).bundle


def test_bundle_requires_the_references_and_predict_agrees_with_the_run(tmp_path, home, trained, runner) -> None:
    run, bundle = trained
    schema = read_json(bundle / "input_schema.json")["x-qfactory"]
    assert schema["required_symbols"] == ["BTC-USD", "ETH-USD"]
    assert "reference symbols of the ref_* features (dataset 'refs', not scored)" in schema["why_symbols"]
    need = schema["required_bars"]
    predictions = pl.read_parquet(run.path / "predictions.parquet").filter(pl.col("segment") == "test")
    bars = pl.concat([load_bars(home, "eq"), load_bars(home, "refs")]).with_columns(pl.col("symbol").cast(pl.String))
    for t in predictions["ts"].unique().sort().gather([0, -1]):
        window = tail_bars(bars.filter(pl.col("ts") <= t), need)
        window.write_parquet(tmp_path / "window.parquet")
        out = tmp_path / "scores.parquet"
        result = runner.invoke(
            app, ["predict", "--bundle", str(bundle), "--source", str(tmp_path / "window.parquet"), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        scores = pl.read_parquet(out)
        expected = predictions.filter(pl.col("ts") == t).sort("symbol")
        assert scores["symbol"].to_list() == expected["symbol"].to_list() == ["S000", "S001", "S002"]
        np.testing.assert_allclose(scores["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6, atol=0)

    lacking = window.filter(pl.col("symbol") != "ETH-USD")
    lacking.write_parquet(tmp_path / "lacking.parquet")
    result = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", str(tmp_path / "lacking.parquet"), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: the bars lack required symbol(s) ['ETH-USD'] (reference symbols of the ref_* features "
        "(dataset 'refs', not scored): BTC-USD, ETH-USD); include their bars"
    ]


def test_the_server_requires_the_references_and_scores_only_the_others(trained) -> None:
    """POST /predict with the bundle's example (equities + references): the equities' scores, as
    batch predict gives them; without a reference symbol: 422 naming it."""
    import httpx
    from serving import LiveServer

    from quant_cli.serve.app import create_app
    from quant_cli.serve.bundle import load
    from quant_cli.serve.loaded import bars_from_records

    _, bundle = trained
    loaded = load(bundle)
    example = read_json(bundle / "example" / "input.json")
    assert {"BTC-USD", "ETH-USD"} <= {b["symbol"] for b in example["bars"]}
    expected = loaded.score_bars(bars_from_records(example["bars"], "example"))
    lacking = {"bars": [b for b in example["bars"] if b["symbol"] != "BTC-USD"]}
    with LiveServer(create_app(loaded)) as live:
        got = httpx.post(f"{live.url}/predict", json=example, timeout=60)
        refused = httpx.post(f"{live.url}/predict", json=lacking, timeout=60)
    assert got.status_code == 200, got.text
    predictions = got.json()["predictions"]
    assert [p["symbol"] for p in predictions] == expected["symbol"].to_list()
    assert not {"BTC-USD", "ETH-USD"} & {p["symbol"] for p in predictions}
    assert [p["score"] for p in predictions] == pytest.approx(expected["score"].to_list(), rel=1e-12)
    assert refused.status_code == 422
    assert refused.json()["error"] == (
        "the bars lack required symbol(s) ['BTC-USD'] (reference symbols of the ref_* features "
        "(dataset 'refs', not scored): BTC-USD, ETH-USD); include their bars"
    )
