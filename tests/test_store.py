"""The Delta bar store: pinned versions, content hash, writer lock, old layout, leftovers."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data import catalog, delta, store
from quant_cli.data import manifest as manifests
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import DataError, StorageError
from quant_cli.io import read_json, write_json_atomic
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter
from quant_cli.stages import split as split_stage

UTC = dt.timezone.utc


@pytest.fixture
def panel() -> pl.DataFrame:
    return generate(symbols=4, bars=40, seed=3)


def _cut(bars: pl.DataFrame, day: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    edge = bars["ts"].min() + dt.timedelta(days=day)
    return bars.filter(pl.col("ts") < edge), bars.filter(pl.col("ts") >= edge)


def _append(data_dir: Path, bars: pl.DataFrame, source: str = "more") -> dict:
    with store.writer(data_dir, "d") as w:
        previous = w.latest()
        old = previous.load_bars(symbols=sorted(set(bars["symbol"]) & set(previous.manifest["symbols"])))
        merged = pl.concat([old, bars], how="diagonal_relaxed").sort("symbol", "ts")
        return w.append(previous, bars, merged, source, None, replaced=False)


# ---------------------------------------------------------------- pinned versions


def test_a_pinned_version_reads_only_its_rows_after_later_commits(tmp_path: Path, panel: pl.DataFrame) -> None:
    first, rest = _cut(panel, 20)
    store.write_store(tmp_path, "d", first, "a")
    pinned = store.pin(tmp_path, "d")
    _append(tmp_path, rest)
    store.write_store(tmp_path, "d", panel.filter(pl.col("symbol") == "S000"), "b")  # replace: version 2
    assert pinned.version == 0 and store.pin(tmp_path, "d").version == 2
    assert_frame_equal(pinned.load_bars(), first)
    assert_frame_equal(store.pin(tmp_path, "d", version=1).load_bars(), panel)
    assert store.pin(tmp_path, "d", version=1).manifest["rows"] == panel.height
    assert len({store.pin(tmp_path, "d", version=v).content_hash for v in (0, 1, 2)}) == 3


def test_reading_a_few_symbols_reads_only_their_partitions(tmp_path: Path, panel: pl.DataFrame) -> None:
    store.write_store(tmp_path, "d", panel, "a")
    root = tmp_path / "d" / "bars"
    (other,) = (root / "symbol=S003").glob("*.parquet")
    other.unlink()  # any read of S003's partition now fails
    got = store.load_bars(tmp_path, "d", symbols=["S001", "S000"], start="2015-01-10")
    assert_frame_equal(
        got,
        panel.filter(pl.col("symbol").is_in(["S000", "S001"]) & (pl.col("ts") >= dt.datetime(2015, 1, 10, tzinfo=UTC))),
    )
    # Which error a missing data file raises is deltalake's internal business; the point is that only
    # a full read touches S003's partition.
    with pytest.raises(Exception):  # noqa: B017
        store.load_bars(tmp_path, "d")


def test_unknown_and_vacuumed_versions_are_one_line_errors(tmp_path: Path, panel: pl.DataFrame) -> None:
    store.write_store(tmp_path, "d", panel, "a")
    store.write_store(tmp_path, "d", panel.head(10), "b")
    with pytest.raises(
        DataError, match=r"^dataset 'd' has no version 5; it has versions 0 to 1 \(see `qfactory data show d`\)$"
    ):
        store.pin(tmp_path, "d", version=5)
    for uri in delta.open_table(tmp_path / "d", "d", 0).file_uris():
        Path(uri).unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"^dataset 'd' version 0 was vacuumed"):
        store.pin(tmp_path, "d", version=0)
    assert store.pin(tmp_path, "d").manifest["rows"] == 10


def test_missing_dataset_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^dataset 'nope' not found in .*; create it with `qfactory ingest"):
        store.pin(tmp_path, "nope")


# ---------------------------------------------------------------- content hash


def test_content_hash_depends_on_the_bars_not_on_how_they_were_written(tmp_path: Path, panel: pl.DataFrame) -> None:
    once = store.write_store(tmp_path / "one", "d", panel, "a")["content_hash"]
    first, rest = _cut(panel, 25)
    store.write_store(tmp_path / "two", "d", first, "a")
    twice = _append(tmp_path / "two", rest)["content_hash"]
    assert once == twice
    changed = panel.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.col("close") * 1.0001).otherwise(pl.col("close")).alias("close")
    )
    assert store.write_store(tmp_path / "three", "d", changed, "a")["content_hash"] != once
    # the per-version manifest rebuilt from the table alone gives the same hash
    table = delta.open_table(tmp_path / "two" / "d", "d")
    assert manifests.rebuild(tmp_path / "two" / "d", "d", table)["content_hash"] == once


def test_keep_last_replaces_rows_in_one_commit(runner: CliRunner, panel: pl.DataFrame) -> None:
    panel.write_csv("all.csv")
    assert runner.invoke(app, ["ingest", "--source", "all.csv", "--dataset", "d", "-q"]).exit_code == 0
    revised = panel.filter(pl.col("symbol") == "S001").tail(5).with_columns(pl.col("volume") + 1)
    revised.write_csv("rev.csv")
    result = runner.invoke(
        app,
        ["ingest", "--source", "rev.csv", "--dataset", "d", "--mode", "append", "--on-duplicate", "keep-last", "-q"],
    )
    assert result.exit_code == 0, result.stderr
    snap = store.pin(Path("data"), "d")
    assert snap.version == 1 and snap.manifest["operation"] == "append"
    expected = pl.concat([panel.join(revised, on=["symbol", "ts"], how="anti"), revised]).sort("symbol", "ts")
    assert_frame_equal(snap.load_bars(), expected)
    assert_frame_equal(store.pin(Path("data"), "d", version=0).load_bars(), panel)


# ---------------------------------------------------------------- writer lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import polars as pl
    from quant_cli.data import store
    data, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    new = pl.read_csv(sys.argv[4], try_parse_dates=True)
    new = new.with_columns(pl.col("ts").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")))
    with store.writer(data, "d") as w:
        previous = w.latest()          # read-existing ...
        ready.touch()
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        w.append(previous, new, new, "holder", None, replaced=False)   # ... commit, under one lock
""")


def test_concurrent_appends_are_serialised_and_none_is_lost(tmp_path: Path, panel: pl.DataFrame) -> None:
    """A writer holding the lock between reading and committing; a real `ingest --mode append` meanwhile."""
    data = tmp_path / "data"
    store.write_store(data, "d", panel.filter(pl.col("symbol") == "S000"), "base")
    panel.filter(pl.col("symbol") == "S001").write_csv(tmp_path / "one.csv")
    panel.filter(pl.col("symbol") == "S002").with_columns(pl.col("ts").dt.strftime("%Y-%m-%d")).write_csv(
        tmp_path / "two.csv"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data), str(ready), str(go), str(tmp_path / "one.csv")], env=env
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and holder.poll() is None:
        time.sleep(0.05)
    ingest = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from quant_cli.cli import app; app()",
            "ingest",
            "--source",
            str(tmp_path / "two.csv"),
            "--dataset",
            "d",
            "--mode",
            "append",
            "--data-dir",
            str(data),
            "-q",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # with the lock the ingest waits for the holder; without it, it would commit and exit here
        ingest.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass
    go.touch()
    assert holder.wait(timeout=120) == 0
    assert ingest.wait(timeout=120) == 0, ingest.stderr.read()
    snap = store.pin(data, "d")
    assert snap.version == 2 and snap.manifest["symbols"] == ["S000", "S001", "S002"]
    assert snap.load_bars().height == 3 * 40 == snap.manifest["rows"]
    table = delta.open_table(data / "d", "d")
    assert manifests.rebuild(data / "d", "d", table)["content_hash"] == snap.content_hash


def test_a_reader_does_not_wait_for_a_writer(tmp_path: Path, panel: pl.DataFrame) -> None:
    store.write_store(tmp_path, "d", panel, "a")
    with store.writer(tmp_path, "d"):
        assert store.load_bars(tmp_path, "d").height == panel.height


# ---------------------------------------------------------------- old layout and leftovers


def _old_layout(root: Path, bars: pl.DataFrame) -> None:
    for (symbol,), part in bars.partition_by("symbol", as_dict=True).items():
        (root / "bars" / f"symbol={symbol}").mkdir(parents=True)
        part.write_parquet(root / "bars" / f"symbol={symbol}" / "part-0.parquet")
    manifest = {
        "dataset": "d",
        "source": "old.csv",
        "frequency": "1d",
        "created": "2020-01-01T00:00:00+00:00",
        "content_hash": "x",
    }
    write_json_atomic(root / "bars" / "_manifest.json", manifest)
    write_json_atomic(root / "manifest.json", manifest)


def test_old_layout_is_refused_by_readers_and_converted_by_the_first_write(
    runner: CliRunner, panel: pl.DataFrame
) -> None:
    first, rest = _cut(panel, 20)
    _old_layout(Path("data") / "d", first)
    result = runner.invoke(app, ["features", "--recipe", _recipe()])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: dataset 'd' is in the old parquet layout (before versioned Delta tables); "
        "convert it once with `qfactory data convert d` (any ingest into it converts it too)"
    )
    rest.write_csv("rest.csv")
    result = runner.invoke(app, ["ingest", "--source", "rest.csv", "--dataset", "d", "--mode", "append"])
    assert result.exit_code == 0, result.stderr
    assert "converted from the old parquet layout" in result.stderr
    assert_frame_equal(store.load_bars(Path("data"), "d"), panel)
    converted = store.pin(Path("data"), "d", version=0).manifest
    assert (converted["operation"], converted["source"], converted["created"]) == (
        "convert",
        "old.csv",
        "2020-01-01T00:00:00+00:00",
    )
    assert not list((Path("data") / "d" / "bars").glob("symbol=*/part-0.parquet"))


def test_data_convert_command(runner: CliRunner, panel: pl.DataFrame) -> None:
    _old_layout(Path("data") / "d", panel)
    result = runner.invoke(app, ["data", "convert", "d", "--json"])
    assert result.exit_code == 0, result.stderr
    assert_frame_equal(store.load_bars(Path("data"), "d"), panel)


def _recipe() -> str:
    Path("r.toml").write_text('[data]\ndataset = "d"\n')
    return "r.toml"


def test_stale_leftovers_are_cleaned_and_never_block(tmp_path: Path, panel: pl.DataFrame) -> None:
    store.write_store(tmp_path, "d", panel, "a")
    root = tmp_path / "d"
    for name in (".staging-bars-1a2b3c", ".old-bars-99999"):
        (root / name / "symbol=S000").mkdir(parents=True)
    store.write_store(tmp_path, "d", panel.head(5), "b")
    assert not [p for p in root.iterdir() if p.name.startswith((".staging-", ".old-bars-"))]


def test_bars_lost_between_the_old_swaps_renames_are_restored(tmp_path: Path, panel: pl.DataFrame) -> None:
    root = tmp_path / "d"
    _old_layout(root, panel)
    os.replace(root / "bars", root / ".old-bars-4242")  # killed after the first rename of the old swap
    with pytest.raises(
        DataError,
        match=r"^dataset 'd': an interrupted write of the old store left its bars in \.old-bars-4242; "
        r"restore and convert them with `qfactory data convert d`$",
    ):
        store.pin(tmp_path, "d")
    reporter = CollectingReporter()
    with store.writer(tmp_path, "d", reporter) as w:
        assert w.latest().manifest["rows"] == panel.height
    assert any("restored the bars" in t for t in reporter.texts("notice"))
    assert_frame_equal(store.load_bars(tmp_path, "d"), panel)


def test_an_interrupted_commit_leaves_the_table_as_it_was(
    tmp_path: Path, panel: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quant_cli.data import catalog

    store.write_store(tmp_path, "d", panel, "a")
    orphan = tmp_path / "d" / "bars" / "symbol=S000" / "part-99999-orphan.parquet"

    def killed(target: str, data: object, **kwargs: object) -> None:  # data files written, then no commit
        pl.DataFrame(data).write_parquet(orphan)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(delta, "write_deltalake", killed)
    with pytest.raises(StorageError, match=r"/d/bars: no space left on device"):  # one line naming the table
        store.write_store(tmp_path, "d", panel.head(3), "b")
    monkeypatch.undo()
    snap = store.pin(tmp_path, "d")
    assert snap.version == 0 and snap.manifest["source"] == "a"
    assert_frame_equal(snap.load_bars(), panel)  # the orphan file is not part of any version
    assert catalog.vacuum(tmp_path, "d")["removed_files"] == 1 and not orphan.exists()
    assert_frame_equal(store.load_bars(tmp_path, "d"), panel)


def test_a_vacuum_during_a_split_keeps_the_version_the_split_pinned(tmp_path, monkeypatch):
    """A split pins version 0; while it builds features another job replaces the dataset and
    vacuums. The run in staging must already name its pinned version, or its files are deleted."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    write_store(data, "p", generate(symbols=3, bars=200, seed=1), "first")
    real_prepare = split_stage.prepare

    def prepare_while_others_write(recipe, snapshot, **kwargs):
        write_store(data, "p", generate(symbols=3, bars=200, seed=2), "second")  # version 1
        catalog.vacuum(data, "p", keep=1, runs_dir=runs)
        return real_prepare(recipe, snapshot, **kwargs)

    monkeypatch.setattr(split_stage, "prepare", prepare_while_others_write)
    recipe = load_recipe(None, ['data.dataset="p"', 'features.sets=["core"]'])
    run = stages.new_split_run(recipe, data, runs).run
    assert read_json(run.path / "manifest.json")["dataset"]["version"] == 0
    assert [r["available"] for r in catalog.dataset_versions(data, "p")] == [True, True]


def _ingest(runner: CliRunner, source: str, dataset: str = "d", *extra: str) -> None:
    result = runner.invoke(app, ["ingest", "--source", source, "--dataset", dataset, "--quiet", *extra])
    assert result.exit_code == 0, result.stderr


def test_each_version_has_its_manifest_and_no_staging_is_left(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    root = Path("data") / "d"
    version = read_json(root / "versions" / "0.json")
    assert {k: v for k, v in version.items() if k != "symbol_hashes"} == read_json(root / "manifest.json")
    assert version["table_version"] == 0 and version["rows"] == 150
    assert sorted(p.name for p in root.iterdir()) == [".writer.lock", "bars", "manifest.json", "versions"]


def test_readers_use_the_version_manifest_not_the_top_level_copy(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    root = Path("data") / "d"
    old_top = (root / "manifest.json").read_bytes()
    _ingest(runner, "synthetic", "d", "--symbols", "4", "--bars", "60")
    # An interruption right after the commit leaves the top-level copy stale: readers must not care.
    (root / "manifest.json").write_bytes(old_top)
    manifest = store.read_manifest(Path("data"), "d")
    assert manifest["rows"] == 240 and len(manifest["symbols"]) == 4 and manifest["table_version"] == 1
    assert store.load_bars(Path("data"), "d").height == manifest["rows"]


def test_a_kill_between_commit_and_manifest_write_is_rebuilt_from_the_table(runner: CliRunner) -> None:
    _ingest(runner, "synthetic", "d", "--symbols", "3", "--bars", "50")
    _ingest(runner, "synthetic", "d", "--symbols", "4", "--bars", "60")
    root = Path("data") / "d"
    written = read_json(root / "versions" / "1.json")
    (root / "versions" / "1.json").unlink()
    assert store.read_manifest(Path("data"), "d") == written  # same hash, stats, source and times
    assert store.pin(Path("data"), "d", version=0).manifest["rows"] == 150
    assert store.exists(Path("data"), "d")
