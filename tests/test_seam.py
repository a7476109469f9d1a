"""The seam (issue 9 §1): table builder, split plan, FittedPipeline; per-fold refits; pinned data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import pin, write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.table import KEYS, prepare
from quant_cli.io import read_json
from quant_cli.models.classical import LinearModel
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import resolve_run
from quant_cli.stages.crossval import cross_validate

BASE = [
    'data.dataset="p"',
    'features.sets=["core"]',
    "label.horizon=3",
    "model.params.n_estimators=20",
    "model.params.min_data_in_leaf=20",
    "train.threads=1",
]


def _recipe(*overrides: str):
    return load_recipe(None, [*BASE, *overrides])


@pytest.fixture
def store(tmp_path):
    data_dir = tmp_path / "data"
    write_store(data_dir, "p", generate(symbols=5, bars=300, seed=3), "test")
    return data_dir


def test_table_keeps_every_row_and_marks_the_excluded(store):
    prepared = prepare(_recipe("split.embargo=4"), pin(store, "p"))
    features = prepared.table.scan_features().select(pl.len()).collect().item()
    assert prepared.rows.height == features  # nothing deleted: purged / embargoed rows are marked
    reasons = set(prepared.rows["excluded"].drop_nulls().unique())
    assert reasons == {"unlabelled", "purged", "embargoed"}
    assert prepared.rows.filter(pl.col("excluded") == "unlabelled")["label"].null_count() > 0


def test_pipeline_round_trips_through_json(store):
    prepared = prepare(_recipe('preprocess.scaler="rank_gauss"'), pin(store, "p"))
    again = FittedPipeline.from_json(prepared.pipeline.to_json())
    assert again == prepared.pipeline
    rows = prepared.table.with_features(prepared.segment("test").select(KEYS))
    assert prepared.pipeline.transform(rows).equals(again.transform(rows))


@pytest.mark.parametrize("benchmark", [None, "S001"])
def test_transform_of_raw_bars_equals_the_runs_table(store, benchmark):
    """One feature path: features computed from raw bars by the pipeline equal the feature store's."""
    extra = [f'features.benchmark="{benchmark}"', 'features.include=["bench_beta_20"]'] if benchmark else []
    prepared = prepare(_recipe(*extra), pin(store, "p"))
    bars = pin(store, "p").load_bars()
    from_bars = prepared.pipeline.transform(bars)
    from_table = prepared.pipeline.transform(prepared.table.with_features(prepared.rows.select(KEYS)))
    joined = from_table.join(from_bars, on=KEYS, how="left", suffix="_bars")
    assert joined.height == from_table.height
    for name in prepared.features:
        a, b = joined[name].to_numpy(), joined[f"{name}_bars"].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)


class RecordingLinear(LinearModel):
    """The real linear model, remembering what each fit saw."""

    seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def fit(self, X, y, **kwargs):
        RecordingLinear.seen.append((np.asarray(X, dtype=np.float64), kwargs.get("sample_weight")))
        return super().fit(X, y, **kwargs)


def test_cross_validation_refits_scaler_and_weights_on_each_folds_training_rows(store):
    """Fails when the fold scaler or the fold weights are fit on all development rows: z-scored
    fold training columns then miss mean 0, and fold weights miss mean 1."""
    recipe = _recipe(
        'split.method="purged_kfold"',
        "split.folds=3",
        'split.sample_weight="uniqueness"',
        "split.time_decay=0.5",
        'preprocess.scaler="zscore"',
        'preprocess.fill="zero"',
    )
    prepared = prepare(recipe, pin(store, "p"))
    RecordingLinear.seen = []
    cross_validate(prepared, recipe["split"], 3, lambda: RecordingLinear(seed=1))
    assert len(RecordingLinear.seen) == 3
    for X, weights in RecordingLinear.seen:
        assert np.abs(X.mean(axis=0)).max() < 1e-4, "the fold scaler was not fit on the fold's training rows"
        assert weights is not None and weights.mean() == pytest.approx(1.0, abs=1e-9), (
            "fold weights not fit on the fold"
        )


def _continue_after_append(tmp_path, runs_dir):
    data_dir = tmp_path / "data"
    full = generate(symbols=5, bars=360, seed=4)
    cut = full["ts"].unique().sort()[299]
    write_store(data_dir, "p", full.filter(pl.col("ts") <= cut), "test")
    recipe = _recipe()
    direct = stages.train_new(recipe, data_dir, runs_dir).run
    split_only = stages.new_split_run(recipe, data_dir, runs_dir).run
    write_store(data_dir, "p", full, "test")  # the dataset grows after the split
    return direct, stages.train_existing(split_only, data_dir).run, data_dir


def test_a_continued_run_reads_the_data_it_was_split_on(tmp_path):
    direct, continued, data_dir = _continue_after_append(tmp_path, tmp_path / "runs")
    a, b = (pl.read_parquet(r.path / "predictions.parquet") for r in (direct, continued))
    assert a.equals(b), "train --run after an append must score the same rows with the same labels"
    recorded = read_json(continued.path / "manifest.json")["dataset"]
    assert recorded["name"] == "p" and recorded["content_hash"] != pin(data_dir, "p").content_hash
    assert set(recorded) == {"name", "version", "content_hash"}


def test_train_run_recomputes_nothing(tmp_path, monkeypatch):
    """train --run reads split/ and the cached feature version: no labels, no feature build."""
    data_dir = tmp_path / "data"
    write_store(data_dir, "p", generate(symbols=5, bars=300, seed=3), "test")
    run = stages.new_split_run(_recipe(), data_dir, tmp_path / "runs").run
    import quant_cli.dataset.table as table

    def refuse(*args, **kwargs):
        raise AssertionError("a continued run recomputed its table")

    monkeypatch.setattr(table, "make_labels", refuse)
    monkeypatch.setattr(table, "feature_table", refuse)
    stages.train_existing(resolve_run(str(run.path), tmp_path / "runs"), data_dir)
    assert (run.path / "predictions.parquet").is_file()


@pytest.mark.parametrize(
    ("dates", "bad"),
    [
        ({"val_start": "2015-08-03", "test_start": "2030-02-01"}, "test_start"),
        ({"val_start": "2014-06-01", "test_start": "2015-10-01"}, "val_start"),
    ],
)
def test_split_dates_outside_the_data_fail_before_any_feature_build(runner, tmp_path, dates, bad):
    assert (
        runner.invoke(
            app, ["ingest", "--source", "synthetic", "--dataset", "p", "--symbols", "3", "--bars", "300", "-q"]
        ).exit_code
        == 0
    )
    args = ["split", "--set", 'data.dataset="p"'] + [a for k, v in dates.items() for a in ("--set", f'split.{k}="{v}"')]
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nname = "r"\n')
    result = runner.invoke(app, [*args, "--recipe", str(recipe)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: split.{bad} {dates[bad]} is outside the data: dataset 'p'")
    assert lines[0].endswith("spans 2015-01-02 to 2016-02-25; pick a date inside that range")
    assert not (tmp_path / "data" / "p" / "features").exists()
