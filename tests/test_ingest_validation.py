"""Bad input to `qfactory ingest`: exit 2, one `error:` line naming file/line/column and the fix,
and the existing store byte-for-byte unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import snapshot_tree
from typer.testing import CliRunner

from quant_cli.cli import app

GOOD = "date,symbol,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10.5,100\n2020-01-03,AAA,10.5,12,10,11,120\n"
HEADER = "date,symbol,open,high,low,close,volume\n"


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    """A store that already holds a dataset, so a rejected ingest has something to preserve."""
    (tmp_path / "good.csv").write_text(GOOD)
    result = runner.invoke(app, ["ingest", "--source", "good.csv", "--dataset", "daily"])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "data"


def _rejected(runner: CliRunner, data_dir: Path, args: list[str]) -> str:
    """Run a failing ingest into the existing dataset; return its one error line."""
    before = snapshot_tree(data_dir)
    result = runner.invoke(app, ["ingest", "--dataset", "daily", *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot_tree(data_dir) == before
    return lines[0]


def _csv(name: str, body: str, header: str = HEADER) -> str:
    Path(name).write_text(header + body)
    return name


# ---------------------------------------------------------------- value errors, with exact lines


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "2020-01-02,AAA,10,11,9,abc,100\n",
            "bad.csv line 2, column 'close': 'abc' is not a number; fix the value or delete the row",
        ),
        (
            "2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,10,11,9,nan,100\n",
            "bad.csv line 3, column 'close': nan is not a finite number; fix the value or delete the row",
        ),
        (
            "2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,10,inf,9,10,100\n",
            "bad.csv line 3, column 'high': inf is not a finite number; fix the value or delete the row",
        ),
        (
            "2020-01-02,AAA,10,11,9,-1.5,100\n",
            "bad.csv line 2, column 'close': price -1.5 is not positive; prices must "
            "be > 0; fix the value or delete the row",
        ),
        (
            "2020-01-02,AAA,0,11,9,10,100\n",
            "bad.csv line 2, column 'open': price 0.0 is not positive; prices must "
            "be > 0; fix the value or delete the row",
        ),
        (
            "2020-01-02,AAA,10,8,9,10,100\n",
            "bad.csv line 2, column 'high': high 8.0 is below low 9.0; fix the bar: high must be >= low",
        ),
        (
            "2020-01-02,AAA,10,10.2,9,10.5,100\n",
            "bad.csv line 2, column 'high': high 10.2 is below close 10.5; fix the "
            "bar: high must be >= max(open, close)",
        ),
        (
            "2020-01-02,AAA,9.5,11,9.8,10.5,100\n",
            "bad.csv line 2, column 'low': low 9.8 is above open 9.5; fix the bar: low must be <= min(open, close)",
        ),
        (
            "2020-01-02,AAA,10,11,9,10.5,-3\n",
            "bad.csv line 2, column 'volume': volume -3.0 is negative; volume must "
            "be >= 0; fix the value or delete the row",
        ),
        ("2020-01-02,AAA,10,11,9,,100\n", "bad.csv line 2, column 'close': empty value; fill it in or delete the row"),
        (
            "2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,10,11,9,10,100\n2020-01-02,AAA,10,11,9,10,100\n",
            "bad.csv line 4, column 'date': duplicate bar for symbol 'AAA' at "
            "2020-01-02T00:00:00+00:00 (also at bad.csv line 2); keep one of the two rows",
        ),
    ],
)
def test_bad_values(runner: CliRunner, data_dir: Path, body: str, expected: str) -> None:
    assert _rejected(runner, data_dir, ["--source", _csv("bad.csv", body)]) == f"error: {expected}"


def test_unparseable_date(runner: CliRunner, data_dir: Path) -> None:
    source = _csv(
        "bad.csv", "2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,10,11,9,10,100\n01/32/2020,AAA,10,11,9,10,100\n"
    )
    line = _rejected(runner, data_dir, ["--source", source])
    assert line.startswith(
        "error: bad.csv line 4, column 'date': '01/32/2020' is not a date/time; fix the value; use ISO 8601"
    )


def test_time_skipped_by_clock_change(runner: CliRunner, data_dir: Path) -> None:
    source = _csv("bad.csv", "2021-03-28 02:30:00,AAA,10,11,9,10,100\n")
    line = _rejected(runner, data_dir, ["--source", source, "--timezone", "Europe/Berlin"])
    assert line.startswith(
        "error: bad.csv line 2, column 'date': '2021-03-28 02:30:00' does not exist in time zone Europe/Berlin"
    )


def test_bad_value_in_a_later_file_names_that_file(runner: CliRunner, data_dir: Path) -> None:
    Path("raw").mkdir()
    Path("raw/AAA.csv").write_text("date,close\n2020-01-02,10\n")
    Path("raw/BBB.csv").write_text("date,close\n2020-01-02,10\n2020-01-03,-2\n")
    line = _rejected(runner, data_dir, ["--source", "raw"])
    assert (
        line == "error: raw/BBB.csv line 3, column 'close': price -2.0 is not positive; "
        "prices must be > 0; fix the value or delete the row"
    )


def test_wide_bad_cell_names_the_symbol_column(runner: CliRunner, data_dir: Path) -> None:
    Path("wide.csv").write_text("Date,AAA,BBB\n2020-01-02,10,20\n2020-01-03,11,x\n")
    line = _rejected(runner, data_dir, ["--source", "wide.csv", "--layout", "wide"])
    assert line == "error: wide.csv line 3, column 'BBB': 'x' is not a number; fix the value or delete the row"


def test_parquet_rows_are_reported_as_rows(runner: CliRunner, data_dir: Path) -> None:
    import polars as pl

    pl.DataFrame({"date": ["2020-01-02", "2020-01-03"], "symbol": ["A", "A"], "close": [1.0, -1.0]}).write_parquet(
        "bad.parquet"
    )
    line = _rejected(runner, data_dir, ["--source", "bad.parquet"])
    assert (
        line == "error: bad.parquet row 2, column 'close': price -1.0 is not positive; "
        "prices must be > 0; fix the value or delete the row"
    )


# ---------------------------------------------------------------- missing columns


@pytest.mark.parametrize(
    ("header", "layout", "needle"),
    [
        (
            "date,symbol,open\n",
            "auto",
            "bad.csv line 1 (header): missing required column 'close' (found 'date', "
            "'symbol', 'open'); add a close column",
        ),
        (
            "symbol,close\n",
            "auto",
            "bad.csv line 1 (header): no timestamp column (found 'symbol', 'close'); name it 'date' or 'timestamp'",
        ),
        (
            "date,close\n",
            "long",
            "bad.csv line 1 (header): no symbol column (found 'date', 'close'); add a 'symbol' column",
        ),
    ],
)
def test_missing_required_columns(runner: CliRunner, data_dir: Path, header: str, layout: str, needle: str) -> None:
    body = ",".join(["x"] * header.count(",")) + ",1\n"  # as many fields as the header
    source = _csv("bad.csv", body, header=header)
    assert needle in _rejected(runner, data_dir, ["--source", source, "--layout", layout])


def test_missing_close_suggests_wide_layout(runner: CliRunner, data_dir: Path) -> None:
    Path("wide.csv").write_text("Date,AAA,BBB\n2020-01-02,10,20\n")
    assert "pass --layout wide" in _rejected(runner, data_dir, ["--source", "wide.csv"])


def test_ohlcv_column_missing_from_one_file(runner: CliRunner, data_dir: Path) -> None:
    Path("raw").mkdir()
    Path("raw/AAA.csv").write_text("date,close,volume\n2020-01-02,10,5\n")
    Path("raw/BBB.csv").write_text("date,close\n2020-01-02,10\n")
    line = _rejected(runner, data_dir, ["--source", "raw"])
    assert line.startswith("error: raw/BBB.csv line 1 (header): no 'volume' column, but raw/AAA.csv has one")


def test_two_columns_meaning_the_same(runner: CliRunner, data_dir: Path) -> None:
    source = _csv("bad.csv", "2020-01-02,A,1,2\n", header="date,symbol,Close,C\n")
    assert "bad.csv line 1 (header): columns 'Close' and 'C' both mean 'close'" in _rejected(
        runner, data_dir, ["--source", source]
    )


# ---------------------------------------------------------------- file-level errors


def test_empty_file(runner: CliRunner, data_dir: Path) -> None:
    Path("empty.csv").write_bytes(b"")
    assert _rejected(runner, data_dir, ["--source", "empty.csv"]).startswith("error: empty.csv: the file is empty")


def test_header_only(runner: CliRunner, data_dir: Path) -> None:
    source = _csv("head.csv", "")
    assert (
        _rejected(runner, data_dir, ["--source", source])
        == "error: head.csv line 2: the file has a header but no data rows; export the bars again"
    )


def test_non_utf8_bytes_report_the_line(runner: CliRunner, data_dir: Path) -> None:
    Path("latin.csv").write_bytes(
        HEADER.encode() + b"2020-01-02,AAA,10,11,9,10,100\n2020-01-03,Soci\xe9t\xe9,10,11,9,10,100\n"
    )
    line = _rejected(runner, data_dir, ["--source", "latin.csv"])
    assert line.startswith(
        "error: latin.csv line 3, column 'symbol': byte 0xE9 is not valid UTF-8; re-save the file as UTF-8"
    )


def test_wrong_delimiter(runner: CliRunner, data_dir: Path) -> None:
    Path("semi.csv").write_text("date;symbol;close\n2020-01-02;AAA;10\n")
    line = _rejected(runner, data_dir, ["--source", "semi.csv"])
    assert (
        line == "error: semi.csv line 1 (header): the header 'date;symbol;close' is one "
        "column; the file looks ';'-delimited; pass --delimiter ';'"
    )


def test_extra_fields_on_a_line(runner: CliRunner, data_dir: Path) -> None:
    source = _csv("ragged.csv", "2020-01-02,AAA,10,11,9,10,100\n2020-01-03,AAA,10,11,9,10,100,7\n")
    assert _rejected(runner, data_dir, ["--source", source]).startswith(
        "error: ragged.csv line 3: 8 fields but the header has 7"
    )


def test_nonexistent_source(runner: CliRunner, data_dir: Path) -> None:
    line = _rejected(runner, data_dir, ["--source", "nope.csv"])
    assert line == "error: source 'nope.csv' not found; pass an existing file, directory or glob, or 'synthetic'"


def test_glob_matching_nothing(runner: CliRunner, data_dir: Path) -> None:
    assert "source 'raw/*.csv': no files match" in _rejected(runner, data_dir, ["--source", "raw/*.csv"])


def test_unknown_extension(runner: CliRunner, data_dir: Path) -> None:
    Path("bars.xlsx").write_bytes(b"PK")
    assert "bars.xlsx: cannot tell the format from the extension '.xlsx'; pass --format" in _rejected(
        runner, data_dir, ["--source", "bars.xlsx"]
    )


def test_corrupt_parquet(runner: CliRunner, data_dir: Path) -> None:
    Path("bad.parquet").write_bytes(b"not parquet at all")
    assert "bad.parquet: not a readable parquet file" in _rejected(runner, data_dir, ["--source", "bad.parquet"])


# ---------------------------------------------------------------- option errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--layout", "wid"],
            "error: --layout 'wid' is not one of 'auto', 'long', 'per_symbol', 'wide' (did you mean 'wide'?)",
        ),
        (["--format", "xls"], "error: --format 'xls' is not one of 'auto', 'csv', 'parquet', 'sqlite'"),
        (["--mode", "apend"], "error: --mode 'apend' is not one of 'replace', 'append' (did you mean 'append'?)"),
        (
            ["--on-duplicate", "last"],
            "error: --on-duplicate 'last' is not one of 'error', 'keep-last' (did you mean 'keep-last'?)",
        ),
        (["--delimiter", ";;"], "error: --delimiter ';;' must be one character, e.g. ',' or ';' (use '\\t' for tabs)"),
        (
            ["--frequency", "daily"],
            "error: frequency 'daily' is not understood; use a count and a unit s/m/h/d/w, e.g. '5m', '1h', '1d'",
        ),
    ],
)
def test_bad_options(runner: CliRunner, data_dir: Path, args: list[str], expected: str) -> None:
    assert _rejected(runner, data_dir, ["--source", "good.csv", *args]) == expected


def test_unknown_timezone(runner: CliRunner, data_dir: Path) -> None:
    line = _rejected(runner, data_dir, ["--source", "good.csv", "--timezone", "Europe/Berln"])
    assert line.startswith("error: --timezone 'Europe/Berln' is not a known time zone (did you mean 'Europe/Berlin'?)")


def test_bad_dataset_name(runner: CliRunner, data_dir: Path) -> None:
    before = snapshot_tree(data_dir)
    result = runner.invoke(app, ["ingest", "--source", "good.csv", "--dataset", "../escape"])
    assert result.exit_code == 2 and "--dataset '../escape': use a plain name" in result.stderr
    assert snapshot_tree(data_dir) == before


def test_missing_source_and_dataset(runner: CliRunner, data_dir: Path) -> None:
    result = runner.invoke(app, ["ingest", "--dataset", "daily"])
    assert result.exit_code == 2 and result.stderr.startswith("error: no source to ingest; pass --source")
    result = runner.invoke(app, ["ingest", "--source", "good.csv"])
    assert result.exit_code == 2 and result.stderr.startswith("error: no dataset name; pass --dataset NAME")


# ---------------------------------------------------------------- SQLite and append errors


def test_sqlite_missing_tables_lists_those_present(runner: CliRunner, data_dir: Path) -> None:
    with sqlite3.connect("prices.sqlite") as conn:
        conn.execute("CREATE TABLE quotes (sym TEXT, ts TEXT, px REAL)")
        conn.execute("CREATE TABLE assets (asset_id INTEGER, symbol TEXT)")
    conn.close()
    line = _rejected(runner, data_dir, ["--source", "prices.sqlite"])
    assert line.startswith(
        "error: prices.sqlite: missing table(s) series of the default "
        "assets/series schema; the database has tables: assets, quotes; pass --query"
    )


def test_sqlite_bad_query(runner: CliRunner, data_dir: Path) -> None:
    with sqlite3.connect("prices.db") as conn:
        conn.execute("CREATE TABLE quotes (sym TEXT, ts TEXT, px REAL)")
    conn.close()
    line = _rejected(runner, data_dir, ["--source", "prices.db", "--query", "SELECT * FROM nope"])
    assert line.startswith("error: prices.db: the query failed (no such table: nope); the database has tables: quotes")


def test_sqlite_bad_row_reports_the_row(runner: CliRunner, data_dir: Path) -> None:
    with sqlite3.connect("prices.db") as conn:
        conn.execute("CREATE TABLE quotes (sym TEXT, ts TEXT, px REAL)")
        conn.executemany("INSERT INTO quotes VALUES (?, ?, ?)", [("A", "2020-01-02", 1.0), ("A", "2020-01-03", 0.0)])
    conn.close()
    query = "SELECT sym AS symbol, ts, px AS close FROM quotes"
    line = _rejected(runner, data_dir, ["--source", "prices.db", "--query", query])
    assert (
        line == "error: prices.db (query result) row 2, column 'close': price 0.0 is not "
        "positive; prices must be > 0; fix the value or delete the row"
    )


def test_append_overlap_is_an_error(runner: CliRunner, data_dir: Path) -> None:
    line = _rejected(runner, data_dir, ["--source", "good.csv", "--mode", "append"])
    assert line.startswith(
        "error: good.csv: 2 bar(s) already in dataset 'daily', first symbol "
        "'AAA' at 2020-01-02T00:00:00+00:00; pass --on-duplicate keep-last"
    )


def test_append_with_different_columns_is_an_error(runner: CliRunner, data_dir: Path) -> None:
    source = _csv("more.csv", "2020-01-06,AAA,11\n", header="date,symbol,close\n")
    line = _rejected(runner, data_dir, ["--source", source, "--mode", "append"])
    assert "more.csv: has columns ['close'] but dataset 'daily' has ['open', 'high', 'low', 'close', 'volume']" in line
