"""Bundles of a sequence model (issue 10 x 12): a request carries the features' warm-up (or the
raw-bar channels' measured lookback) plus seq_len - 1 bars, `bundle verify` rechecks the example,
batch predict scores every bar with a full window, and a request one bar short is refused."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from helpers import SYN_RECIPE as RECIPE
from serving import train

from quant_cli.cli import app
from quant_cli.data.store import load_bars
from quant_cli.errors import DataError
from quant_cli.io import read_json
from quant_cli.serve.bundle import load


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from typer.testing import CliRunner

    trained = train(tmp_path_factory.mktemp("seqbundle"), "lstm_bars")
    result = CliRunner().invoke(app, ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir)])
    assert result.exit_code == 0, result.output
    return trained, trained.run.path / "bundle"


def test_required_bars_add_the_window_to_the_longest_lookback(built):
    _, bundle = built
    spec = read_json(bundle / "input_schema.json")["x-qfactory"]
    measured = read_json(bundle / "lookback.json")
    assert (spec["window"], spec["timeframes"]) == (8, [])
    assert measured["channels"]["bars"]["bar_volume_z"] == 20 > measured["required_bars"]  # ret_10 needs 11 bars
    assert spec["required_bars"] == measured["request_bars"] == 20 + 8 - 1
    assert {"open", "high", "low", "close", "volume"} <= set(spec["columns"])


def test_verify_rechecks_the_example(runner, built):
    _, bundle = built
    result = runner.invoke(app, ["bundle", "verify", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["example_rows"] == 2 and out["max_relative_difference"] <= 1e-12


def test_predict_scores_every_bar_with_a_full_window_and_refuses_one_bar_short(runner, built, tmp_path):
    trained, bundle = built
    need = read_json(bundle / "input_schema.json")["x-qfactory"]["required_bars"]
    out = tmp_path / "all.parquet"
    result = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            "p",
            "--out",
            str(out),
            "--all",
            "--data-dir",
            str(trained.data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).height == 4 * (600 - need + 1)
    short = tmp_path / "short.parquet"
    load_bars(trained.data_dir, "p").group_by("symbol", maintain_order=True).tail(need - 1).write_parquet(short)
    result = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", str(short), "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: symbol 'S000' has {need - 1} bar(s); this bundle needs at least {need} bars per symbol "
        "(its features' measured lookback and the model's window of 8 rows); send more history"
    )


def test_feature_rows_cannot_feed_a_model_that_reads_bars(built):
    _, bundle = built
    loaded = load(bundle)
    rows = pl.DataFrame({"symbol": ["S000"], "ts": [0], **{f: [0.0] for f in loaded.pipeline.features}})
    with pytest.raises(DataError, match="reads raw bars .* send bars, not precomputed feature rows"):
        loaded.score_features(rows.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))))


def test_feature_rows_score_where_the_rows_sent_hold_a_full_window(tmp_path):
    """POST /predict/features' path for a features-only lstm: each symbol's first seq_len - 1 rows
    have no window and are absent; the rest equal the scores of the same bars."""
    from quant_cli import stages

    trained = train(tmp_path, "lstm")
    loaded = load(stages.bundle_existing(trained.run, trained.data_dir).bundle)
    bars = (
        load_bars(trained.data_dir, "p")
        .with_columns(pl.col("symbol").cast(pl.String))
        .filter(pl.col("ts") >= pl.datetime(2016, 1, 1, time_zone="UTC"))
    )
    from_bars = loaded.score_bars(bars, every_bar=True)
    rows = loaded.pipeline.compute(bars)
    scored = loaded.score_features(rows)
    per_symbol = bars.group_by("symbol").len()["len"].to_list()
    assert scored.height == sum(n - 7 for n in per_symbol)
    joined = from_bars.join(scored, on=["symbol", "ts"], suffix="_f")
    assert joined.height == from_bars.height and (joined["score"] == joined["score_f"]).all()


def test_a_sequence_bundle_scores_the_latest_bar_like_training(runner, home, tmp_path):
    """Was NaN for every symbol: predict/serve handed the model only the rows to score (the latest
    bar), so a window had no history, and required_bars ignored seq_len; bundle verify passed
    with a 'max relative difference nan' on an all-null example."""
    import json

    root, bars = home
    recipe = tmp_path / "seq.toml"
    recipe.write_text(
        RECIPE.replace('name = "linear"', 'name = "gru"\n[model.params]\nseq_len = 6\nhidden = 4')
        + 'epochs = 1\n[preprocess]\nfill = "zero"\n'
    )
    data, runs = str(root / "data"), str(tmp_path / "runs")
    trained = runner.invoke(app, ["train", "--recipe", str(recipe), "--quiet", "--data-dir", data, "--runs-dir", runs])
    assert trained.exit_code == 0, trained.output
    run = Path(trained.stdout.strip())
    bundled = runner.invoke(app, ["bundle", "--run", str(run), "--quiet", "--data-dir", data])
    assert bundled.exit_code == 0, bundled.output
    expected = json.loads((run / "bundle" / "example" / "expected.json").read_text())["predictions"]
    assert all(p["score"] is not None for p in expected)
    required = json.loads((run / "bundle" / "input_schema.json").read_text())["x-qfactory"]["required_bars"]
    lookback = json.loads((run / "bundle" / "lookback.json").read_text())["required_bars"]
    assert required == lookback + 5
    scored = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(run / "bundle"),
            "--source",
            "syn",
            "--all",
            "--out",
            str(tmp_path / "s.parquet"),
            "--data-dir",
            data,
        ],
    )
    assert scored.exit_code == 0, scored.output
    served = pl.read_parquet(tmp_path / "s.parquet")
    assert served["score"].is_finite().all()
    both = pl.read_parquet(run / "predictions.parquet").join(served, on=["symbol", "ts"], suffix="_served")
    assert both.height > 0 and (both["score"] - both["score_served"]).abs().max() < 1e-5


@pytest.fixture(scope="module")
def bundle(home, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    root, _ = home
    runs = tmp_path_factory.mktemp("audit-bundle")
    trained = CliRunner().invoke(
        app,
        [
            "train",
            "--recipe",
            str(root / "r.toml"),
            "--quiet",
            "--data-dir",
            str(root / "data"),
            "--runs-dir",
            str(runs),
        ],
    )
    assert trained.exit_code == 0, trained.output
    bundled = CliRunner().invoke(
        app, ["bundle", "--run", trained.stdout.strip(), "--quiet", "--data-dir", str(root / "data")]
    )
    assert bundled.exit_code == 0, bundled.output
    return Path(bundled.stdout.strip())
