"""Less common shapes of real exports that `qfactory ingest` should read without fuss."""

from __future__ import annotations

import datetime as dt
import pathlib
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from conftest import snapshot_tree
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data import store
from quant_cli.data.ingest import IngestRequest, ingest, with_overrides
from quant_cli.data.store import load_bars
from quant_cli.data.synthetic import generate
from quant_cli.features.store import feature_table
from quant_cli.recipe import load_recipe

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
    Path("EURUSD.csv").write_text(
        "Date,Time,Open,High,Low,Close\n2020-01-02,09:30,1.1,1.2,1.0,1.15\n2020-01-02,09:35,1.15,1.2,1.1,1.12\n"
    )
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
    assert stored.select("symbol", "ts", "close", "extra").rows() == [
        ("AAA", _day(2), 10.0, 1.0),
        ("BBB", _day(2), 20.0, None),
    ]


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
    Path("r.toml").write_text(
        '[data]\ndataset = "daily"\nsource = "p.csv"\ndelimiter = ";"\ntimezone = "America/New_York"\n'
    )
    result = runner.invoke(app, ["ingest", "--recipe", "r.toml"])
    assert result.exit_code == 0, result.stderr
    assert _stored()["ts"].to_list() == [_day(2, 14, 30)]
    assert_frame_equal(_stored().select("close"), pl.DataFrame({"close": [10.0]}))


def error_line(result) -> str:
    """The one stderr line of a failed command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_semicolon_file_with_decimal_commas_gets_the_delimiter_hint(runner: CliRunner) -> None:
    Path("semi.csv").write_text("Date;Ticker;Close\n2020-01-02;AAA;10,5\n")
    line = error_line(runner.invoke(app, ["ingest", "--source", "semi.csv", "--dataset", "d"]))
    assert (
        line == "error: semi.csv line 1 (header): the header 'Date;Ticker;Close' is one "
        "column; the file looks ';'-delimited; pass --delimiter ';'"
    )


def test_extra_fields_in_a_comma_file_still_point_at_the_line(runner: CliRunner) -> None:
    Path("extra.csv").write_text("Date,Ticker,Close\n2020-01-02,AAA,10,5\n")
    line = error_line(runner.invoke(app, ["ingest", "--source", "extra.csv", "--dataset", "d"]))
    assert (
        line == "error: extra.csv line 2: 4 fields but the header has 3; remove the "
        "extra fields or quote values that contain the delimiter"
    )


def _lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_yahoo_folder_with_and_without_adj_close(runner: CliRunner) -> None:
    Path("yahoo").mkdir()
    for name in ("AAA", "CCC"):
        Path(f"yahoo/{name}.csv").write_text(
            "Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,10,11,9,10,9.5,100\n2020-01-03,10,11,9,10.5,10,100\n"
        )
    for name in ("BBB", "DDD"):
        Path(f"yahoo/{name}.csv").write_text(
            "Date,Open,High,Low,Close,Volume\n2020-01-02,10,11,9,10,100\n2020-01-03,10,11,9,10.5,100\n"
        )
    result = runner.invoke(app, ["ingest", "--source", "yahoo", "--dataset", "y"])
    assert result.exit_code == 0, result.stderr
    notices = [line for line in _lines(result) if "'adj_close'" in line]
    assert len(notices) == 1 and "BBB, DDD" in notices[0] and "AAA" not in notices[0]
    bars = store.load_bars(Path("data"), "y")
    nulls = bars.group_by("symbol").agg(pl.col("adj_close").null_count()).sort("symbol")["adj_close"].to_list()
    assert nulls == [0, 2, 0, 2]


def test_a_blank_adj_close_cell_in_a_file_that_has_the_column_is_still_an_error(runner: CliRunner) -> None:
    Path("yahoo").mkdir()
    Path("yahoo/AAA.csv").write_text("Date,Close,Adj Close\n2020-01-02,10,9.5\n2020-01-03,10,\n")
    Path("yahoo/BBB.csv").write_text("Date,Close\n2020-01-02,10\n")
    result = runner.invoke(app, ["ingest", "--source", "yahoo", "--dataset", "y"])
    assert result.exit_code == 2
    assert _lines(result) == [
        "error: yahoo/AAA.csv line 3, column 'Adj Close': empty value; fill it in or delete the row"
    ]


def _sqlite_with_sectors(path: str, bars: pl.DataFrame) -> None:
    symbols = sorted(set(bars["symbol"]))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE assets (asset_id INTEGER PRIMARY KEY, symbol TEXT, sector TEXT, lot REAL)")
        conn.executemany(
            "INSERT INTO assets VALUES (?, ?, ?, ?)",
            [(i, s, "tech" if i % 2 else "energy", 100.0) for i, s in enumerate(symbols)],
        )
        conn.execute(
            "CREATE TABLE series (asset_id INTEGER, timestamp TEXT, open REAL, high "
            "REAL, low REAL, close REAL, volume REAL)"
        )
        ids = {s: i for i, s in enumerate(symbols)}
        conn.executemany(
            "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ids[r["symbol"]], r["ts"].isoformat(), r["open"], r["high"], r["low"], r["close"], r["volume"])
                for r in bars.iter_rows(named=True)
            ],
        )
    conn.close()


def test_sqlite_asset_columns_are_carried_and_sector_features_work(runner: CliRunner, tmp_path: Path) -> None:
    bars = generate(symbols=4, bars=80, seed=5)
    _sqlite_with_sectors("p.sqlite", bars)
    result = runner.invoke(app, ["ingest", "--source", "p.sqlite", "--dataset", "s"])
    assert result.exit_code == 0, result.stderr
    stored = store.load_bars(Path("data"), "s")
    assert stored.schema["sector"] == pl.String and stored.schema["lot"] == pl.Float64
    assert stored.group_by("symbol").agg(pl.col("sector").first()).sort("symbol")["sector"].to_list() == [
        "energy",
        "tech",
        "energy",
        "tech",
    ]
    Path("r.toml").write_text('[data]\ndataset = "s"\n[features]\ninclude = ["sector_rel_ret_5"]\nsets = []\n')
    table = feature_table(load_recipe(Path("r.toml")), tmp_path / "data")
    assert "sector_rel_ret_5" in table.columns and table.frame["sector_rel_ret_5"].drop_nulls().len() > 0


def test_a_text_column_that_varies_within_a_symbol_is_still_dropped(runner: CliRunner) -> None:
    Path("p.csv").write_text("date,symbol,close,sector,note\n2020-01-02,AAA,10,tech,a\n2020-01-03,AAA,11,tech,b\n")
    result = runner.invoke(app, ["ingest", "--source", "p.csv", "--dataset", "t"])
    assert result.exit_code == 0, result.stderr
    assert "column 'note' is not numeric; dropped" in result.stderr
    assert store.load_bars(Path("data"), "t").columns == ["symbol", "ts", "close", "sector"]


@pytest.mark.parametrize(
    "value, column, expected",
    [
        (
            "1e308",
            "close",
            "price 1e+308 is out of range; prices must be between 1e-12 and 1e+12; fix the value or delete the row",
        ),
        (
            "1e-300",
            "low",
            "price 1e-300 is out of range; prices must be between 1e-12 and 1e+12; fix the value or delete the row",
        ),
    ],
)
def test_absurd_magnitudes_are_refused(runner: CliRunner, value: str, column: str, expected: str) -> None:
    row = {"open": "10", "high": "11", "low": "9", "close": "10"}
    row[column] = value
    if column == "close":
        row["high"] = value
    Path("p.csv").write_text(
        f"date,symbol,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,{row['open']},{row['high']},{row['low']},{row['close']},100\n"
    )
    before = snapshot_tree(Path("data"))
    result = runner.invoke(app, ["ingest", "--source", "p.csv", "--dataset", "x"])
    assert result.exit_code == 2
    column_shown = "high" if column == "close" else column  # high is checked first in the row rules
    assert _lines(result) == [f"error: p.csv line 3, column '{column_shown}': {expected}"]
    assert snapshot_tree(Path("data")) == before


def test_binary_input_is_refused_from_its_first_block(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    with open("big.csv", "wb") as handle:
        handle.write(b"\x00" * (4 << 20))
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
    result = runner.invoke(app, ["ingest", "--source", "big.csv", "--dataset", "x"])
    assert result.exit_code == 2
    assert _lines(result) == [
        "error: big.csv: binary data, not CSV text (a NUL byte at offset 0); "
        "pass a CSV, parquet or SQLite file (--format tells a misnamed one)"
    ]
