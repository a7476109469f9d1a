"""Serving semantics found on real data (issue 21 §4): a cross-sectional bundle scores its own
universe only, bars of another frequency are refused, and `predict` reads every layout `ingest` reads."""

from __future__ import annotations

import httpx
import polars as pl
import pytest
from serving import LiveServer, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars
from quant_cli.io import read_json
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load

CLOSE_ONLY = ("features.sets=[]", 'features.include=["ret_5", "ret_10", "vol_5"]')
CROSS_SECTIONAL = ("features.sets=[]", 'features.include=["ret_5", "cs_rank_ret_5", "cs_z_ret_5"]')


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    """A daily bundle whose features read only close prices (so a wide file of closes can feed it)."""
    trained = train(tmp_path_factory.mktemp("daily"), extra=CLOSE_ONLY)
    return trained, stages.bundle_existing(trained.run, trained.data_dir).bundle


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("ranked"), extra=CROSS_SECTIONAL)
    return trained, stages.bundle_existing(trained.run, trained.data_dir).bundle


def _example(bundle):
    return read_json(bundle / "example" / "input.json")["bars"]


def _post(bundle, requests):
    with LiveServer(create_app(load(bundle))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        return [client.post("/predict", json={"bars": bars}) for bars in requests]


# ---- cross-sectional features: the bundle's universe only ----------------------------------------


def test_a_cross_sectional_bundle_refuses_symbols_outside_its_universe(runner, tmp_path, ranked):
    """Before: an unknown symbol entered every rank and z-score, and the known symbols' scores moved with a 200."""
    _, bundle = ranked
    universe = read_json(bundle / "input_schema.json")["x-qfactory"]["required_symbols"]
    assert universe == ["S000", "S001", "S002", "S003"]
    bars = _example(bundle)
    stranger = [{**bar, "symbol": "ZZZ", "close": bar["close"] * 1.7} for bar in bars if bar["symbol"] == "S001"]
    message = (
        "symbol 'ZZZ' is not in this bundle's universe: cross-sectional features such as cs_rank_ret_5 are "
        "statistics over the 4 symbols the model was trained on, and another symbol would change every score; "
        "send only those symbols (GET /metadata: input.required_symbols)"
    )
    alone, joined = _post(bundle, [bars, bars + stranger])
    assert alone.status_code == 200 and len(alone.json()["predictions"]) == 4
    assert joined.status_code == 422 and joined.json() == {"error": message, "kind": "DataError"}
    source = tmp_path / "bars.csv"
    pl.DataFrame(bars + stranger).write_csv(source)
    result = runner.invoke(
        app, ["predict", "--bundle", str(bundle), "--source", str(source), "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {message}"


# ---- frequency -------------------------------------------------------------------------------------


def _hourly(bars):
    frame = pl.DataFrame(bars).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
    start = frame["ts"].min()
    hours = pl.int_range(pl.len()).over("symbol").cast(pl.Int64) * 3_600_000_000
    return frame.with_columns((pl.lit(start) + pl.duration(microseconds=hours)).alias("ts"))


def test_a_daily_bundle_refuses_hourly_bars_naming_both(runner, tmp_path, daily):
    _, bundle = daily
    bars = _example(bundle)
    hourly = _hourly(bars)
    message = "symbol 'S000' has 1h bars; this bundle was trained on 1d bars; send 1d bars (resample the 1h bars first)"
    hourly_bars = hourly.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).to_dicts()
    as_daily, as_hourly = _post(bundle, [bars, hourly_bars])
    assert as_daily.status_code == 200
    assert as_hourly.status_code == 422 and as_hourly.json() == {"error": message, "kind": "DataError"}
    hourly.write_csv(tmp_path / "hourly.csv")
    result = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            str(tmp_path / "hourly.csv"),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {message}"


def test_one_hourly_request_among_daily_ones_is_refused_alone(daily):
    """Several requests at once share one feature computation: the hourly one is still refused on its own."""
    _, bundle = daily
    bars = _example(bundle)
    one = [bar for bar in bars if bar["symbol"] == "S001"]
    hourly = _hourly(one).with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).to_dicts()
    with LiveServer(create_app(load(bundle))) as server:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(6) as pool:

            def send(body):
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    return client.post("/predict", json={"bars": body})

            answers = list(pool.map(send, [bars, hourly, bars, bars, hourly, bars]))
    assert [a.status_code for a in answers] == [200, 422, 200, 200, 422, 200]
    assert answers[1].json()["error"].startswith("symbol 'S001' has 1h bars; this bundle was trained on 1d bars")


# ---- predict reads every layout ingest reads -------------------------------------------------------


def test_predict_reads_a_wide_file(runner, tmp_path, daily):
    """date + one close column per symbol, as `ingest --layout wide` reads it: the same scores as the long file."""
    trained, bundle = daily
    bars = load_bars(trained.data_dir, "p").select(pl.col("symbol").cast(pl.String), "ts", "close")
    bars.write_csv(tmp_path / "long.csv")
    wide = bars.pivot(on="symbol", index="ts", values="close").sort("ts")
    dated = wide.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("date")).drop("ts")
    dated.select("date", pl.exclude("date")).write_csv(tmp_path / "wide.csv")
    out = {}
    for layout, extra in (("long", []), ("wide", ["--layout", "wide"])):
        result = runner.invoke(
            app,
            [
                "predict",
                "--bundle",
                str(bundle),
                "--source",
                str(tmp_path / f"{layout}.csv"),
                "--out",
                str(tmp_path / f"{layout}.parquet"),
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        out[layout] = pl.read_parquet(tmp_path / f"{layout}.parquet")
    assert out["wide"].height == 4 and out["wide"].equals(out["long"])


def test_predict_refuses_reading_options_for_a_stored_dataset(runner, tmp_path, daily):
    trained, bundle = daily
    result = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            "p",
            "--layout",
            "wide",
            "--data-dir",
            str(trained.data_dir),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --layout says how to read a file, but --source 'p' is a stored dataset "
        "(already canonical bars); drop --layout"
    )
    bad = runner.invoke(
        app,
        [
            "predict",
            "--bundle",
            str(bundle),
            "--source",
            str(tmp_path),
            "--layout",
            "wid",
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert bad.exit_code == 2
    assert bad.stderr.strip() == (
        "error: --layout 'wid' is not one of 'auto', 'long', 'per_symbol', 'wide' (did you mean 'wide'?)"
    )
