"""Ingest bugs found on real data (issue 9 §4/§5): mixed Adj Close, SQLite asset columns,
absurd magnitudes, binary input."""

from __future__ import annotations

import pathlib
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import snapshot_tree
from quant_cli.cli import app
from quant_cli.data import store
from quant_cli.data.synthetic import generate
from quant_cli.features.store import feature_table
from quant_cli.recipe import load_recipe


def _lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_yahoo_folder_with_and_without_adj_close(runner: CliRunner) -> None:
    Path("yahoo").mkdir()
    for name in ("AAA", "CCC"):
        Path(f"yahoo/{name}.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,10,11,9,10,9.5,100\n2020-01-03,10,11,9,10.5,10,100\n")
    for name in ("BBB", "DDD"):
        Path(f"yahoo/{name}.csv").write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,10,11,9,10,100\n2020-01-03,10,11,9,10.5,100\n")
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
    assert _lines(result) == ["error: yahoo/AAA.csv line 3, column 'Adj Close': empty value; fill it in or delete the row"]


def _sqlite_with_sectors(path: str, bars: pl.DataFrame) -> None:
    symbols = sorted(set(bars["symbol"]))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE assets (asset_id INTEGER PRIMARY KEY, symbol TEXT, sector TEXT, lot REAL)")
        conn.executemany("INSERT INTO assets VALUES (?, ?, ?, ?)", [(i, s, "tech" if i % 2 else "energy", 100.0) for i, s in enumerate(symbols)])
        conn.execute("CREATE TABLE series (asset_id INTEGER, timestamp TEXT, open REAL, high REAL, low REAL, close REAL, volume REAL)")
        ids = {s: i for i, s in enumerate(symbols)}
        conn.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", [
            (ids[r["symbol"]], r["ts"].isoformat(), r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in bars.iter_rows(named=True)])
    conn.close()


def test_sqlite_asset_columns_are_carried_and_sector_features_work(runner: CliRunner, tmp_path: Path) -> None:
    bars = generate(symbols=4, bars=80, seed=5)
    _sqlite_with_sectors("p.sqlite", bars)
    result = runner.invoke(app, ["ingest", "--source", "p.sqlite", "--dataset", "s"])
    assert result.exit_code == 0, result.stderr
    stored = store.load_bars(Path("data"), "s")
    assert stored.schema["sector"] == pl.String and stored.schema["lot"] == pl.Float64
    assert stored.group_by("symbol").agg(pl.col("sector").first()).sort("symbol")["sector"].to_list() == ["energy", "tech", "energy", "tech"]
    Path("r.toml").write_text('[data]\ndataset = "s"\n[features]\ninclude = ["sector_rel_ret_5"]\nsets = []\n')
    table = feature_table(load_recipe(Path("r.toml")), tmp_path / "data")
    assert "sector_rel_ret_5" in table.columns and table.frame["sector_rel_ret_5"].drop_nulls().len() > 0


def test_a_text_column_that_varies_within_a_symbol_is_still_dropped(runner: CliRunner) -> None:
    Path("p.csv").write_text("date,symbol,close,sector,note\n2020-01-02,AAA,10,tech,a\n2020-01-03,AAA,11,tech,b\n")
    result = runner.invoke(app, ["ingest", "--source", "p.csv", "--dataset", "t"])
    assert result.exit_code == 0, result.stderr
    assert "column 'note' is not numeric; dropped" in result.stderr
    assert store.load_bars(Path("data"), "t").columns == ["symbol", "ts", "close", "sector"]


@pytest.mark.parametrize("value, column, expected", [
    ("1e308", "close", "price 1e+308 is out of range; prices must be between 1e-12 and 1e+12; fix the value or delete the row"),
    ("1e-300", "low", "price 1e-300 is out of range; prices must be between 1e-12 and 1e+12; fix the value or delete the row"),
])
def test_absurd_magnitudes_are_refused(runner: CliRunner, value: str, column: str, expected: str) -> None:
    row = {"open": "10", "high": "11", "low": "9", "close": "10"}
    row[column] = value
    if column == "close":
        row["high"] = value
    Path("p.csv").write_text(f"date,symbol,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,{row['open']},{row['high']},{row['low']},{row['close']},100\n")
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
    assert _lines(result) == ["error: big.csv: binary data, not CSV text (a NUL byte at offset 0); "
                              "pass a CSV, parquet or SQLite file (--format tells a misnamed one)"]
