"""`qfactory predict` (issue 12 §2, §3, §6): latest bar or every bar with enough history, the ingest
validation, the measured minimum of bars, required symbols, class probabilities."""

from __future__ import annotations

import polars as pl
import pytest
from serving import train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars
from quant_cli.io import read_json
from quant_cli.serve.loaded import bars_from_records

CROSSING = (
    'features.benchmark="S000"',
    'features.include=["bench_beta_5", "cs_rank_ret_5"]',
    'label.kind="direction"',
    'model.task="classification"',
)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("reg"))
    return trained, stages.bundle_existing(trained.run, trained.data_dir).bundle


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("cross"), extra=CROSSING)
    return trained, stages.bundle_existing(trained.run, trained.data_dir).bundle


def _csv(path, bars):
    bars.write_csv(path)
    return str(path)


def _required(bundle) -> dict:
    return read_json(bundle / "input_schema.json")["x-qfactory"]


def test_latest_bar_per_symbol_and_every_bar_with_enough_history(runner, tmp_path, regression):
    trained, bundle = regression
    bars = load_bars(trained.data_dir, "p")
    source = _csv(tmp_path / "bars.csv", bars)
    latest = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", source, "--out", str(tmp_path / "s.parquet")]
    )
    assert latest.exit_code == 0, latest.output
    assert latest.stdout.strip() == str(tmp_path / "s.parquet")
    scores = pl.read_parquet(tmp_path / "s.parquet")
    assert scores.columns == ["symbol", "ts", "score"]
    assert scores.select("symbol", "ts").equals(
        bars.group_by("symbol").agg(pl.col("ts").max()).sort("symbol").with_columns(pl.col("symbol").cast(pl.String))
    )
    every = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            "p",
            "--all",
            "--out",
            str(tmp_path / "all.csv"),
            "--data-dir",
            str(trained.data_dir),
        ],
    )
    assert every.exit_code == 0, every.output
    rows = pl.read_csv(tmp_path / "all.csv")
    need = _required(bundle)["required_bars"]
    assert rows.height == 4 * (600 - need + 1)  # a dataset name works as the source too
    assert rows.filter(pl.col("symbol") == "S000")["score"].to_list()[-1] == pytest.approx(scores["score"][0], rel=1e-9)


def test_too_few_bars_are_refused_naming_the_minimum(runner, tmp_path, regression):
    trained, bundle = regression
    need = _required(bundle)["required_bars"]
    short = load_bars(trained.data_dir, "p").group_by("symbol", maintain_order=True).tail(need - 1)
    result = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            _csv(tmp_path / "b.csv", short),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: symbol 'S000' has {need - 1} bar(s); this bundle needs at least {need} bars per symbol "
        "(its features' measured lookback); send more history"
    )
    assert not (tmp_path / "s.csv").exists()


def test_bad_bars_get_the_ingest_error(runner, tmp_path, regression):
    trained, bundle = regression
    bars = load_bars(trained.data_dir, "p").with_row_index()
    broken = bars.with_columns(
        pl.when(pl.col("index") == 7).then(pl.col("low") / 2).otherwise(pl.col("high")).alias("high")
    ).drop("index")
    source = _csv(tmp_path / "bad.csv", broken)
    result = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", source, "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {source} line 9, column 'high': high ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--source", "nowhere.csv"],
            "error: --source 'nowhere.csv': no such file, and no dataset of that "
            "name under {data}; pass a CSV or parquet file, or the name of an "
            "ingested dataset",
        ),
        (
            ["--source", "p", "--out", "scores.txt"],
            "error: --out scores.txt: unknown output format '.txt'; end the file name in .parquet or .csv",
        ),
    ],
)
def test_bad_options_are_one_line(runner, regression, args, message):
    trained, bundle = regression
    full = ["predict", "--bundle", str(bundle), "--out", "s.csv", "--data-dir", str(trained.data_dir), *args]
    result = runner.invoke(app, full)
    assert result.exit_code == 2
    assert result.stderr.strip() == message.format(data=trained.data_dir)


def test_required_symbols_are_named_and_classifiers_get_probabilities(runner, tmp_path, crossing):
    trained, bundle = crossing
    spec = _required(bundle)
    assert spec["required_symbols"] == ["S000", "S001", "S002", "S003"]  # the benchmark, then the universe (cs_rank)
    bars = load_bars(trained.data_dir, "p")
    without = _csv(tmp_path / "no_bench.csv", bars.filter(pl.col("symbol") != "S000"))
    refused = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", without, "--out", str(tmp_path / "s.csv")]
    )
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        "error: the bars lack required symbol(s) ['S000'] (benchmark of the bench_* features: S000; "
        "cross-sectional features such as cs_rank_ret_5 compare all 4 symbols "
        "the model was trained on); include their bars"
    )
    made = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            _csv(tmp_path / "all.csv", bars),
            "--out",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert made.exit_code == 0, made.output
    scores = pl.read_parquet(tmp_path / "s.parquet")
    assert scores.columns == ["symbol", "ts", "score", "p_-1", "p_1"]  # direction label: down / up
    assert scores.select(pl.sum_horizontal("p_-1", "p_1")).to_series().to_list() == pytest.approx([1.0] * 4)


def test_the_server_answers_a_classifier_with_its_probabilities(crossing):
    """POST /predict of a classifier bundle (benchmark and cross-sectional features: scored one
    request at a time): the score and p_<class> per symbol, as batch predict gives them."""
    import httpx
    from serving import LiveServer

    from quant_cli.serve.app import create_app
    from quant_cli.serve.bundle import load

    _, bundle = crossing
    loaded = load(bundle)
    example = read_json(bundle / "example" / "input.json")
    expected = loaded.score_bars(bars_from_records(example["bars"], "example"))
    with LiveServer(create_app(loaded)) as live:
        got = httpx.post(f"{live.url}/predict", json=example, timeout=60)
    assert got.status_code == 200, got.text
    predictions = got.json()["predictions"]
    assert [p["symbol"] for p in predictions] == expected["symbol"].to_list()
    for p, row in zip(predictions, expected.iter_rows(named=True)):
        assert p["score"] == pytest.approx(row["score"], rel=1e-12)
        assert p["probabilities"] == pytest.approx({"p_-1": row["p_-1"], "p_1": row["p_1"]}, rel=1e-12)
