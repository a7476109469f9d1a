"""`qfactory ingest` round trips: every source kind and layout ends up as the same canonical bars."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from conftest import snapshot_tree
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data import store
from quant_cli.data.store import load_bars, read_manifest

UTC = dt.timezone.utc


@pytest.fixture
def bars(small_panel: pl.DataFrame) -> pl.DataFrame:
    """3 symbols x 20 daily bars of the shared synthetic panel, values rounded to survive text."""
    head = (
        small_panel.filter(pl.col("symbol").is_in(["S000", "S001", "S002"]))
        .group_by("symbol", maintain_order=True)
        .head(20)
    )
    return head.with_columns(pl.col("open", "high", "low", "close").round(4), pl.col("volume").round(0))


def _ingest(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, ["ingest", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def _stored(name: str = "daily") -> pl.DataFrame:
    return load_bars(Path("data"), name)


def _as_text(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("date")).drop("ts")


def test_csv_long_round_trip(runner: CliRunner, bars: pl.DataFrame, tmp_path: Path) -> None:
    _as_text(bars).write_csv("prices.csv")
    out = _ingest(runner, "--source", "prices.csv", "--dataset", "daily")
    assert out == str(tmp_path / "data" / "daily")  # QFACTORY_DATA_DIR (conftest)
    stored = _stored()
    assert stored.schema == pl.Schema(
        {
            "symbol": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            **dict.fromkeys(("open", "high", "low", "close", "volume"), pl.Float64),
        }
    )
    assert_frame_equal(stored, bars)


def test_per_symbol_directory(runner: CliRunner, bars: pl.DataFrame) -> None:
    Path("raw").mkdir()
    for (symbol,), part in _as_text(bars).partition_by("symbol", as_dict=True).items():
        part.drop("symbol").write_csv(f"raw/{symbol}.csv")
    Path("raw/README.md").write_text("not data")  # a directory means its csv/parquet files only
    _ingest(runner, "--source", "raw", "--dataset", "daily")
    assert_frame_equal(_stored(), bars)


def test_glob_of_per_symbol_parquet_files(runner: CliRunner, bars: pl.DataFrame) -> None:
    Path("raw").mkdir()
    for (symbol,), part in bars.partition_by("symbol", as_dict=True).items():
        part.drop("symbol").write_parquet(f"raw/{symbol}.parquet")
    _ingest(runner, "--source", "raw/S00[01].parquet", "--dataset", "daily")
    assert_frame_equal(_stored(), bars.filter(pl.col("symbol") != "S002"))


def test_parquet_long_with_naive_timestamps(runner: CliRunner, bars: pl.DataFrame) -> None:
    bars.with_columns(pl.col("ts").dt.replace_time_zone(None)).write_parquet("prices.parquet")
    _ingest(runner, "--source", "prices.parquet", "--dataset", "daily")
    assert_frame_equal(_stored(), bars)


def test_wide_close_matrix(runner: CliRunner, bars: pl.DataFrame) -> None:
    wide = _as_text(bars).pivot(on="symbol", index="date", values="close")
    wide = wide.with_columns(pl.when(pl.col("date") == "2015-01-02").then(None).otherwise(pl.col("S002")).alias("S002"))
    wide.rename({"date": "Date"}).write_csv("closes.csv")
    _ingest(runner, "--source", "closes.csv", "--dataset", "daily", "--layout", "wide")
    stored = _stored()
    assert stored.columns == ["symbol", "ts", "close"]  # close only: no fake open/high/low/volume
    expected = bars.select("symbol", "ts", "close").filter(
        ~((pl.col("symbol") == "S002") & (pl.col("ts") == dt.datetime(2015, 1, 2, tzinfo=UTC)))
    )
    assert_frame_equal(stored, expected)


def _sqlite(path: str, bars: pl.DataFrame, symbol_in_series: bool = False) -> None:
    symbols = bars["symbol"].unique(maintain_order=True).to_list()
    ids = {s: i + 1 for i, s in enumerate(symbols)}
    rows = [
        (
            r["symbol"] if symbol_in_series else ids[r["symbol"]],
            r["ts"].strftime("%Y-%m-%d"),
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
        )
        for r in bars.iter_rows(named=True)
    ]
    key = "symbol TEXT" if symbol_in_series else "asset_id INTEGER"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE assets (asset_id INTEGER PRIMARY KEY, symbol TEXT)")
        conn.executemany("INSERT INTO assets VALUES (?, ?)", [(i, s) for s, i in ids.items()])
        conn.execute(
            f"CREATE TABLE series ({key}, timestamp TEXT, open REAL, high REAL, low REAL, close REAL, volume REAL)"
        )
        conn.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()


@pytest.mark.parametrize("symbol_in_series", [False, True])
def test_sqlite_default_schema(runner: CliRunner, bars: pl.DataFrame, symbol_in_series: bool) -> None:
    _sqlite("prices.sqlite", bars, symbol_in_series)
    _ingest(runner, "--source", "prices.sqlite", "--dataset", "daily")
    assert_frame_equal(_stored(), bars)  # asset_id links tables; it does not become a column


def test_sqlite_query(runner: CliRunner, bars: pl.DataFrame) -> None:
    _sqlite("prices.data", bars)
    query = (
        "SELECT a.symbol AS Ticker, s.timestamp AS Date, s.close AS Close FROM "
        "series s JOIN assets a USING (asset_id) WHERE a.symbol != 'S001';"
    )
    _ingest(runner, "--source", "prices.data", "--format", "sqlite", "--query", query, "--dataset", "daily")
    assert_frame_equal(_stored(), bars.filter(pl.col("symbol") != "S001").select("symbol", "ts", "close"))


def test_aliases_extras_and_timezones(runner: CliRunner) -> None:
    Path("p.csv").write_text(
        "Time,Code,O,H,L,C,Adj Close,Vol,Open Interest,Sector\n"
        "2024-03-01 09:30:00,AAA,10,11,9,10.5,10.4,100,7,tech\n"
        "2024-03-01T15:30:00Z,AAA,10,11,9,10.5,10.4,100,,tech\n"
        "2024-03-01 17:30:00+01:00,AAA,10,11,9,10.5,10.4,100,8,tech\n"
    )
    result = runner.invoke(app, ["ingest", "--source", "p.csv", "--dataset", "daily", "--timezone", "America/New_York"])
    assert result.exit_code == 0, result.stderr
    assert "notice" not in result.stderr  # Sector has one value per symbol: a symbol attribute, kept as text
    stored = _stored()
    assert stored.columns == [
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "adj_close",
        "open_interest",
        "sector",
    ]
    assert stored["sector"].to_list() == ["tech"] * 3
    assert stored["ts"].to_list() == [
        dt.datetime(2024, 3, 1, 14, 30, tzinfo=UTC),  # naive: New York wall clock (EST, UTC-5)
        dt.datetime(2024, 3, 1, 15, 30, tzinfo=UTC),  # 'Z' and '+01:00' are converted, not reinterpreted
        dt.datetime(2024, 3, 1, 16, 30, tzinfo=UTC),
    ]
    assert stored["open_interest"].to_list() == [7.0, None, 8.0]


def test_timestamp_conversion() -> None:
    from quant_cli.data.schema import parse_timestamps

    texts = pl.Series(["2024-03-01 09:30:00", "2024-03-01T15:30:00Z", "2024-03-01 16:30+01:00", "2024-07-01"])
    assert parse_timestamps(texts, "America/New_York").to_list() == [
        dt.datetime(2024, 3, 1, 14, 30, tzinfo=UTC),  # naive: New York wall clock (EST)
        dt.datetime(2024, 3, 1, 15, 30, tzinfo=UTC),
        dt.datetime(2024, 3, 1, 15, 30, tzinfo=UTC),
        dt.datetime(2024, 7, 1, 4, 0, tzinfo=UTC),  # date-only: local midnight (EDT)
    ]
    epoch = dt.datetime(2020, 1, 2, tzinfo=UTC)
    for values in (["1577923200"], ["1577923200000"], [1577923200], [1577923200000]):
        assert parse_timestamps(pl.Series(values), "Asia/Tokyo").to_list() == [epoch]  # epochs are UTC
    assert parse_timestamps(pl.Series(["20200102"]), "UTC").to_list() == [epoch]


def test_unsorted_input_is_sorted_with_a_notice(runner: CliRunner, bars: pl.DataFrame) -> None:
    _as_text(bars).reverse().write_csv("prices.csv")
    result = runner.invoke(app, ["ingest", "--source", "prices.csv", "--dataset", "daily"])
    assert result.exit_code == 0, result.stderr
    assert "notice: prices.csv: rows not in time order; sorted by (symbol, ts)" in " ".join(result.stderr.split())
    assert_frame_equal(_stored(), bars)


def test_date_major_panel_needs_no_notice(runner: CliRunner, bars: pl.DataFrame) -> None:
    _as_text(bars.sort("ts", "symbol")).write_csv("prices.csv")
    result = runner.invoke(app, ["ingest", "--source", "prices.csv", "--dataset", "daily"])
    assert result.exit_code == 0 and "notice" not in result.stderr
    assert_frame_equal(_stored(), bars)


def test_append_overlap_and_keep_last(runner: CliRunner, bars: pl.DataFrame) -> None:
    first, second = (
        bars.filter(pl.col("ts") < dt.datetime(2015, 1, 16, tzinfo=UTC)),
        bars.filter(pl.col("ts") >= dt.datetime(2015, 1, 15, tzinfo=UTC)),
    )
    _as_text(first).write_csv("a.csv")
    _as_text(second.filter(pl.col("ts") > dt.datetime(2015, 1, 15, tzinfo=UTC))).write_csv("b.csv")
    _ingest(runner, "--source", "a.csv", "--dataset", "daily")
    created = read_manifest(Path("data"), "daily")["created"]
    _ingest(runner, "--source", "b.csv", "--dataset", "daily", "--mode", "append")
    assert_frame_equal(_stored(), bars)
    assert read_manifest(Path("data"), "daily")["created"] == created

    revised = second.with_columns(pl.col("volume") + 1)  # overlaps 2015-01-15 and everything after
    _as_text(revised).write_csv("c.csv")
    assert runner.invoke(app, ["ingest", "--source", "c.csv", "--dataset", "daily", "--mode", "append"]).exit_code == 2
    result = runner.invoke(
        app, ["ingest", "--source", "c.csv", "--dataset", "daily", "--mode", "append", "--on-duplicate", "keep-last"]
    )
    assert result.exit_code == 0, result.stderr
    assert "existing bar(s) replaced by the new rows" in result.stderr
    assert_frame_equal(
        _stored(),
        pl.concat([first.filter(pl.col("ts") < dt.datetime(2015, 1, 15, tzinfo=UTC)), revised]).sort("symbol", "ts"),
    )


def test_append_to_missing_dataset_creates_it(runner: CliRunner, bars: pl.DataFrame) -> None:
    _as_text(bars).write_csv("prices.csv")
    _ingest(runner, "--source", "prices.csv", "--dataset", "fresh", "--mode", "append")
    assert_frame_equal(_stored("fresh"), bars)


def test_synthetic_json_payload(runner: CliRunner, tmp_path: Path) -> None:
    out = _ingest(
        runner, "--source", "synthetic", "--dataset", "demo", "--symbols", "3", "--bars", "30", "--seed", "7", "--json"
    )
    payload = json.loads(out)
    manifest = read_manifest(Path("data"), "demo")
    assert payload == {
        "path": str(tmp_path / "data" / "demo"),
        "dataset": "demo",
        "rows": 90,
        "symbols": 3,
        "start": manifest["start"],
        "end": manifest["end"],
        "frequency": "1d",
        "content_hash": manifest["content_hash"],
        "version": 0,
    }
    assert manifest["source"].startswith("synthetic(symbols=3, bars=30, frequency=1d")
    again = _ingest(
        runner, "--source", "synthetic", "--dataset", "demo", "--symbols", "3", "--bars", "30", "--seed", "7", "--json"
    )
    assert json.loads(again)["content_hash"] == payload["content_hash"]  # same seed, same bytes


def test_recipe_supplies_defaults(runner: CliRunner, tmp_path: Path) -> None:
    Path("r.toml").write_text(
        '[run]\nseed = 3\n[data]\ndataset = "demo"\nsource = '
        '"synthetic"\n[data.synthetic]\nsymbols = 2\nbars = 15\nfrequency = "1h"\n'
    )
    out = _ingest(
        runner, "--recipe", "r.toml", "--set", "data.synthetic.bars=12", "--data-dir", str(tmp_path / "elsewhere")
    )
    assert out == str(tmp_path / "elsewhere" / "demo")
    manifest = read_manifest(tmp_path / "elsewhere", "demo")
    assert (manifest["rows"], manifest["frequency"]) == (24, "1h")
    assert "seed=3" in manifest["source"]  # data.synthetic.seed falls back to run.seed


def test_quiet_prints_only_the_path(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["ingest", "--source", "synthetic", "--dataset", "demo", "--bars", "20", "--symbols", "2", "-q"]
    )
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.strip() == str(tmp_path / "data" / "demo")


def test_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0 and "Example: qfactory ingest" in result.stdout


def test_library_request_from_recipe(tmp_path: Path) -> None:
    from quant_cli.data.ingest import ingest, request_from_recipe
    from quant_cli.recipe import load_recipe

    recipe = load_recipe(
        None,
        [
            "data.source=synthetic",
            "data.dataset=lib",
            "data.synthetic.symbols=2",
            "data.synthetic.bars=10",
            "run.seed=5",
        ],
    )
    request = request_from_recipe(recipe)
    assert (request.source, request.dataset, request.mode, request.synthetic.seed) == ("synthetic", "lib", "replace", 5)
    manifest = ingest(request, tmp_path / "lib-data")
    assert manifest["rows"] == 20 and manifest["symbols"] == ["S000", "S001"]
    assert request_from_recipe(recipe, mode="append").mode == "append"


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ["--bars", "99999999999999999999"],
            "error: --bars 99999999999999999999: must be between 10 and 10000000 (data.synthetic.bars)",
        ),
        (
            ["--symbols", "99999999999999999999"],
            "error: --symbols 99999999999999999999: must be between 1 and 100000 (data.synthetic.symbols)",
        ),
        (
            ["--symbols", "100000", "--bars", "10000000"],
            "error: --symbols 100000 x --bars 10000000 = 1,000,000,000,000 bars is more than a synthetic panel "
            "may hold (50,000,000); pass fewer symbols or bars",
        ),
        (["--seed", "-1"], "error: --seed -1: must be between 0 and 4294967295 (run.seed)"),
        (["--signal", "nan"], "error: --signal nan: must be between 0.0 and 1.0 (data.synthetic.signal)"),
    ],
)
def test_synthetic_ingest_flags_are_bounded_like_the_recipe_keys(runner, flags, line):
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "z", *flags])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]


def error_line(result) -> str:
    """The one stderr line of a failed command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _ingest_csv(runner: CliRunner, source: str, dataset: str = "d", *extra: str) -> None:
    result = runner.invoke(app, ["ingest", "--source", source, "--dataset", dataset, "--quiet", *extra])
    assert result.exit_code == 0, result.stderr


WITH_ADJ = "Date,Ticker,Close,Adj Close\n2020-01-02,AAA,10,9.5\n2020-01-03,AAA,11,10.4\n"


WITHOUT_ADJ = "Date,Ticker,Close\n2020-01-06,AAA,12\n2020-01-07,AAA,13\n"


def test_append_without_adj_close_to_a_dataset_with_it_is_rejected(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ)
    Path("b.csv").write_text(WITHOUT_ADJ)
    _ingest_csv(runner, "a.csv")
    before = snapshot_tree(Path("data"))
    line = error_line(runner.invoke(app, ["ingest", "--source", "b.csv", "--dataset", "d", "--mode", "append"]))
    assert (
        line == "error: b.csv: no 'adj_close' column, but dataset 'd' (from a.csv) has "
        "one; add 'adj_close' to b.csv, or pass --mode replace"
    )
    assert snapshot_tree(Path("data")) == before


def test_append_with_adj_close_to_a_dataset_without_it_is_rejected(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ.replace("2020-01-0", "2020-02-0"))
    Path("b.csv").write_text(WITHOUT_ADJ)
    _ingest_csv(runner, "b.csv")
    before = snapshot_tree(Path("data"))
    line = error_line(runner.invoke(app, ["ingest", "--source", "a.csv", "--dataset", "d", "--mode", "append"]))
    assert (
        line == "error: a.csv: column 'adj_close' is not in dataset 'd' (from b.csv); "
        "drop it from a.csv, or pass --mode replace"
    )
    assert snapshot_tree(Path("data")) == before


def test_append_with_the_same_columns_still_works(runner: CliRunner) -> None:
    Path("a.csv").write_text(WITH_ADJ)
    Path("c.csv").write_text(WITH_ADJ.replace("2020-01-0", "2020-02-0"))
    _ingest_csv(runner, "a.csv")
    _ingest_csv(runner, "c.csv", "d", "--mode", "append")
    bars = store.load_bars(Path("data"), "d")
    assert bars.height == 4 and bars["adj_close"].null_count() == 0


def test_directory_where_one_file_lacks_adj_close_is_ingested_with_nulls(runner: CliRunner) -> None:
    Path("adj").mkdir()
    Path("adj/AAA.csv").write_text("Date,Close,Adj Close\n2020-01-02,10,9.5\n")
    Path("adj/BBB.csv").write_text("Date,Close\n2020-01-02,10\n")
    result = runner.invoke(app, ["ingest", "--source", "adj", "--dataset", "d"])
    assert result.exit_code == 0, result.stderr
    bars = store.load_bars(Path("data"), "d")
    assert bars["adj_close"].to_list() == [9.5, None]
