"""Less common shapes of real exports that `qfactory ingest` should read without fuss."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data.ingest import IngestRequest, ingest, with_overrides
from quant_cli.data.store import load_bars

UTC = dt.timezone.utc


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, ["ingest", "--dataset", "daily", *args])
    assert result.exit_code == 0, result.stderr
    return result.stderr


def _stored() -> pl.DataFrame:
    return load_bars(Path("data"), "daily")


def _day(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2020, 1, day, hour, minute, tzinfo=UTC)


def test_tab_delimited_with_byte_order_mark(runner: CliRunner) -> None:
    Path("p.tsv").write_bytes(b"\xef\xbb\xbfDate\tSymbol\tClose\n2020-01-02\tAAA\t10\n2020-01-03\tAAA\t11\n")
    _ok(runner, "--source", "p.tsv", "--delimiter", "\\t")
    assert _stored()["close"].to_list() == [10.0, 11.0]


def test_semicolon_delimiter(runner: CliRunner) -> None:
    Path("p.csv").write_text("date;symbol;close\n2020-01-02;AAA;10\n")
    _ok(runner, "--source", "p.csv", "--delimiter", ";")
    assert _stored()["symbol"].to_list() == ["AAA"]


def test_separate_date_and_time_columns(runner: CliRunner) -> None:
    Path("EURUSD.csv").write_text("Date,Time,Open,High,Low,Close\n2020-01-02,09:30,1.1,1.2,1.0,1.15\n2020-01-02,09:35,1.15,1.2,1.1,1.12\n")
    _ok(runner, "--source", "EURUSD.csv")
    stored = _stored()
    assert stored["ts"].to_list() == [_day(2, 9, 30), _day(2, 9, 35)]
    assert stored["symbol"].to_list() == ["EURUSD", "EURUSD"]  # no symbol column: the file name


def test_wide_parquet_with_nan_gaps(runner: CliRunner) -> None:
    """pandas writes missing cells of a float matrix as NaN: no bar, not a bad price."""
    dates = [dt.datetime(2020, 1, d) for d in (2, 3)]
    pl.DataFrame({"index": dates, "AAA": [10.0, 11.0], "BBB": [float("nan"), 21.0]}).write_parquet("closes.parquet")
    _ok(runner, "--source", "closes.parquet", "--layout", "wide")
    stored = _stored()
    assert stored.select("symbol", "close").rows() == [("AAA", 10.0), ("AAA", 11.0), ("BBB", 21.0)]


def test_explicit_per_symbol_takes_the_file_name(runner: CliRunner) -> None:
    Path("raw").mkdir()
    Path("raw/AAA.csv").write_text("date,symbol,close\n2020-01-02,junk,10\n")
    _ok(runner, "--source", "raw", "--layout", "per-symbol")
    assert _stored()["symbol"].to_list() == ["AAA"]


def test_mixed_csv_and_parquet_directory(runner: CliRunner) -> None:
    Path("raw").mkdir()
    Path("raw/AAA.csv").write_text("date,close,extra\n2020-01-02,10,1\n")
    pl.DataFrame({"date": [dt.date(2020, 1, 2)], "close": [20.0]}).write_parquet("raw/BBB.parquet")
    _ok(runner, "--source", "raw")
    stored = _stored()
    assert stored.select("symbol", "ts", "close", "extra").rows() == [("AAA", _day(2), 10.0, 1.0), ("BBB", _day(2), 20.0, None)]


def test_epoch_milliseconds_and_intraday_frequency(runner: CliRunner) -> None:
    start = 1577955600000  # 2020-01-02 09:00 UTC in milliseconds
    rows = "".join(f"{start + i * 300_000},AAA,{10 + i}\n" for i in range(4))
    Path("p.csv").write_text("timestamp,ticker,close\n" + rows)
    stderr = _ok(runner, "--source", "p.csv", "--timezone", "Asia/Tokyo")  # epochs are UTC whatever --timezone says
    assert _stored()["ts"].to_list() == [_day(2, 9, 5 * i) for i in range(4)]
    assert "(5m)" in stderr


def test_declared_frequency_is_recorded(tmp_path: Path) -> None:
    Path("p.csv").write_text("date,symbol,close\n2020-01-02,A,1\n2020-01-09,A,2\n")
    manifest = ingest(IngestRequest(source="p.csv", dataset="weekly", frequency="1w"), tmp_path / "d")
    assert manifest["frequency"] == "1w"


def test_with_overrides_routes_synthetic_options() -> None:
    base = IngestRequest(source="", dataset="")
    synthetic = with_overrides(base, source="synthetic", dataset="x", frequency="1h", bars=50, seed=None)
    assert (synthetic.synthetic.frequency, synthetic.synthetic.bars, synthetic.frequency) == ("1h", 50, None)
    files = with_overrides(base, source="p.csv", frequency="1d", layout=None)
    assert (files.frequency, files.synthetic.frequency, files.layout) == ("1d", "1d", "auto")


def test_recipe_file_source(runner: CliRunner) -> None:
    Path("p.csv").write_text("Date;Ticker;Close\n2020-01-02 09:30;AAA;10\n")
    Path("r.toml").write_text('[data]\ndataset = "daily"\nsource = "p.csv"\ndelimiter = ";"\ntimezone = "America/New_York"\n')
    result = runner.invoke(app, ["ingest", "--recipe", "r.toml"])
    assert result.exit_code == 0, result.stderr
    assert _stored()["ts"].to_list() == [_day(2, 14, 30)]
    assert_frame_equal(_stored().select("close"), pl.DataFrame({"close": [10.0]}))
