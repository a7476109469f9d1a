"""Versioned feature store (DESIGN.md §2) and the `qfactory features` CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import DataError, RecipeError
from quant_cli.features import build, compute_features, registry
from quant_cli.features.store import feature_table, list_versions, scan_version
from quant_cli.io import OWNER_FILE
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The conftest points QFACTORY_DATA_DIR here; one small dataset 'ds'."""
    root = tmp_path / "data"
    write_store(root, "ds", generate(symbols=3, bars=120, seed=1), source="synthetic")
    return root


def recipe_file(tmp_path: Path, body: str = "", name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text('[data]\ndataset = "ds"\n' + body, encoding="utf-8")
    return path


def recipe(tmp_path: Path, body: str = "", overrides: list[str] | None = None) -> dict:
    return load_recipe(recipe_file(tmp_path, body), overrides)


# --- library ------------------------------------------------------------------------------------


def test_build_then_cache_hit(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = feature_table(recipe(tmp_path), data_dir)
    assert not first.cached
    assert first.path == data_dir / "ds" / "features" / first.fingerprint
    assert first.frame.columns == ["symbol", "ts", *first.columns] and len(first.columns) == 21
    monkeypatch.setattr(build, "build_parts", lambda *a, **k: pytest.fail("cache hit must not recompute"))
    second = feature_table(recipe(tmp_path), data_dir)
    assert second.cached and second.fingerprint == first.fingerprint and second.columns == first.columns
    assert second.frame.equals(first.frame)


def test_spec_json_records_the_version(tmp_path: Path, data_dir: Path) -> None:
    table = feature_table(recipe(tmp_path, "[features]\nwindows = [5, 20]\n"), data_dir)
    spec = json.loads((table.path / "spec.json").read_text())
    assert spec["fingerprint"] == table.fingerprint and spec["features"] == table.columns
    assert spec["windows"] == [5, 20] and spec["sets"] == ["core"] and spec["dataset"] == "ds"
    assert spec["feature_code_version"] == registry.FEATURE_CODE_VERSION and len(spec["content_hash"]) == 64
    assert spec["rows"] == 360 and spec["symbols"] == [] and spec["start"] is None
    assert spec["null_share"]["ret_5"] == pytest.approx(5 / 120, abs=1e-6) and spec["null_share"]["hl_range"] == 0.0
    assert spec["build_seconds"] >= 0 and spec["created"]
    assert (
        scan_version(table.path).collect().equals(table.frame)
        and (table.path / "table" / "part-00000.parquet").is_file()
    )


def test_rebuild_on_data_change(tmp_path: Path, data_dir: Path) -> None:
    first = feature_table(recipe(tmp_path), data_dir)
    write_store(data_dir, "ds", generate(symbols=3, bars=120, seed=2), source="synthetic")
    second = feature_table(recipe(tmp_path), data_dir)
    assert not second.cached and second.fingerprint != first.fingerprint
    assert {v["fingerprint"] for v in list_versions(data_dir, "ds")} == {first.fingerprint, second.fingerprint}


@pytest.mark.parametrize(
    "overrides",
    [
        ["features.windows=[5, 10]"],
        ["features.exclude=['volume']"],
        ["data.start='2015-03-02'"],
        ["data.symbols=['S000']"],
    ],
)
def test_rebuild_on_spec_or_filter_change(tmp_path: Path, data_dir: Path, overrides: list[str]) -> None:
    base = feature_table(recipe(tmp_path), data_dir)
    changed = feature_table(recipe(tmp_path, overrides=overrides), data_dir)
    assert not changed.cached and changed.fingerprint != base.fingerprint


def test_rebuild_on_feature_code_version(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = feature_table(recipe(tmp_path), data_dir)
    monkeypatch.setattr(registry, "FEATURE_CODE_VERSION", "test-bump")
    bumped = feature_table(recipe(tmp_path), data_dir)
    assert not bumped.cached and bumped.fingerprint != base.fingerprint


def test_start_end_filter_rows_after_warm_up_on_full_history(tmp_path: Path, data_dir: Path) -> None:
    table = feature_table(recipe(tmp_path, 'start = "2015-03-02"\nend = "2015-04-30"\nsymbols = ["S001"]\n'), data_dir)
    full = compute_features(generate(symbols=3, bars=120, seed=1).filter(pl.col("symbol") == "S001"), table.columns)
    expected = full.filter(pl.col("ts").dt.date().is_between(pl.date(2015, 3, 2), pl.date(2015, 4, 30)))
    assert table.frame.equals(expected)
    assert table.frame["ret_20"].null_count() == 0  # warmed up by bars before data.start


def test_close_only_dataset_records_skipped_features(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_store(root, "ds", generate(symbols=2, bars=80, seed=1).select("symbol", "ts", "close"), source="synthetic")
    reporter = CollectingReporter()
    table = feature_table(recipe(tmp_path), root, reporter=reporter)
    spec = json.loads((table.path / "spec.json").read_text())
    assert set(spec["skipped"]) == {"atr_14", "hl_range", "volume_z_20"} and "atr_14" not in table.columns
    assert sum(t.startswith("skipped 3 feature(s)") for t in reporter.texts("notice")) == 1


def test_missing_dataset_and_unset_dataset(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match="dataset 'nope' not found"):
        feature_table(recipe(tmp_path, overrides=["data.dataset=nope"]), data_dir)
    with pytest.raises(RecipeError, match=r"^data.dataset is not set; "):
        feature_table(load_recipe(None), data_dir)


def test_range_without_bars_is_a_data_error(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match="select no bars of dataset 'ds'"):
        feature_table(recipe(tmp_path, 'start = "2030-01-01"\n'), data_dir)
    assert list_versions(data_dir, "ds") == []  # nothing half-written


# --- CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["features", "--help"], ["features", "ls", "--help"], ["features", "ls-specs", "--help"]]
)
def test_help_has_an_example(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert any(line.strip().startswith("Example: qfactory features") for line in result.stdout.splitlines())


def test_cli_builds_then_reuses(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    path = recipe_file(tmp_path)
    first = runner.invoke(app, ["features", "--recipe", str(path)])
    assert first.exit_code == 0, first.output
    folder = Path(first.stdout.strip())
    assert folder.parent == data_dir / "ds" / "features" and (folder / "table" / "part-00000.parquet").is_file()
    again = runner.invoke(app, ["features", "--recipe", str(path), "--json", "--quiet"])
    payload = json.loads(again.stdout)
    assert payload == {"path": str(folder), "fingerprint": folder.name, "rows": 360, "features": 21, "cached": True}
    assert again.stderr == ""


def test_cli_set_override_and_data_dir_option(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    other = tmp_path / "elsewhere"
    write_store(other, "ds", generate(symbols=2, bars=80, seed=5), source="synthetic")
    args = [
        "features",
        "--recipe",
        str(recipe_file(tmp_path)),
        "--data-dir",
        str(other),
        "--set",
        "features.windows=[5]",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["path"].startswith(str(other)) and payload["features"] == 12 and payload["rows"] == 160


def test_cli_ls_lists_versions(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    path = recipe_file(tmp_path)
    fp = Path(runner.invoke(app, ["features", "--recipe", str(path), "-q"]).stdout.strip()).name
    for args in (["features", "ls"], ["features", "ls", "--dataset", "ds"], ["features", "ls", "--recipe", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        header, row = result.stdout.splitlines()
        assert header.split() == ["DATASET", "FINGERPRINT", "CREATED", "ROWS", "FEATURES", "BUILD_SECONDS"]
        assert row.split()[:2] == ["ds", fp] and row.split()[3:5] == ["360", "21"]
    listed = json.loads(runner.invoke(app, ["features", "ls", "--json"]).stdout)
    assert [v["fingerprint"] for v in listed] == [fp]


def test_cli_ls_unknown_dataset(runner: CliRunner, data_dir: Path) -> None:
    result = runner.invoke(app, ["features", "ls", "--dataset", "nope"])
    assert result.exit_code == 2 and result.stderr.startswith("error: dataset 'nope' not found")


def test_cli_ls_specs(runner: CliRunner) -> None:
    result = runner.invoke(app, ["features", "ls-specs"])
    assert result.exit_code == 0
    assert any(line.split()[:3] == ["rsi_14", "close", "momentum,oscillator"] for line in result.stdout.splitlines())
    rows = json.loads(runner.invoke(app, ["features", "ls-specs", "--json"]).stdout)
    assert {r["name"] for r in rows} == set(registry.REGISTRY.families)


def test_cli_unknown_feature_exits_2_with_one_line(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    path = recipe_file(tmp_path, '[features]\ninclude = ["rsi_41"]\n')
    result = runner.invoke(app, ["features", "--recipe", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: features.include: unknown feature or tag 'rsi_41' (did you mean 'rsi_14'?); "
        "see `qfactory features ls-specs` for feature names and tags"
    ]
    assert result.stdout == "" and not (data_dir / "ds" / "features").exists()


def test_cli_without_recipe_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["features", "--quiet"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --recipe is required")


# --- pinned snapshots ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["", '[features]\nsets = ["core", "cross_asset"]\nbenchmark = "S000"\n'])
def test_build_reads_only_the_pinned_snapshot(tmp_path: Path, data_dir: Path, body: str) -> None:
    from quant_cli.data import store

    pinned = store.pin(data_dir, "ds")
    write_store(data_dir, "ds", generate(symbols=3, bars=120, seed=2), source="synthetic")  # committed after the pin
    built = feature_table(recipe(tmp_path, body), data_dir, snapshot=pinned)
    latest = feature_table(recipe(tmp_path, body), data_dir)
    assert built.fingerprint != latest.fingerprint and not built.cached
    alone = tmp_path / "alone"
    write_store(alone, "ds", generate(symbols=3, bars=120, seed=1), source="synthetic")  # only the pinned bars
    reference = feature_table(recipe(tmp_path, body), alone)
    assert built.fingerprint == reference.fingerprint  # the fingerprint names the pinned version's content
    assert built.frame.equals(reference.frame)
    assert json.loads((built.path / "spec.json").read_text())["dataset_version"] == 0


def test_features_that_are_entirely_null_get_one_notice(tmp_path: Path, data_dir: Path) -> None:
    reporter = CollectingReporter()
    feature_table(recipe(tmp_path, "[features]\nwindows = [5, 500]\n"), data_dir, reporter=reporter)
    notices = [t for t in reporter.texts("notice") if "no values at all" in t]
    assert len(notices) == 1 and "_500" in notices[0] and "_5," not in notices[0]
    again = CollectingReporter()
    feature_table(recipe(tmp_path, "[features]\nwindows = [5, 500]\n"), data_dir, reporter=again)  # cached: said again
    assert [t for t in again.texts("notice") if "no values at all" in t] == notices


def test_dead_builders_staging_is_cleaned_and_does_not_block(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "ds" / "features"
    stale = root / ".staging-abc-0a1b2c"
    stale.mkdir(parents=True)
    (stale / OWNER_FILE).write_text(
        json.dumps({"pid": 999_999_999, "host": socket.gethostname()})
    )  # its builder is gone
    feature_table(recipe(tmp_path), data_dir)
    assert not stale.exists()
