"""Path models' targets (issue 19 §2): for a forward_return label of horizon h, the h one-bar returns
after execution, every one ending by the label's t1 (so purge and embargo need no change); other
labels are refused at recipe load with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.cli import app
from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import EXECUTION_PRICE, forward_path, forward_return

QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")


@pytest.mark.parametrize("execution", ["next_open", "next_close"])
@pytest.mark.parametrize("horizon", [1, 3])
def test_a_rows_path_targets_are_the_returns_between_its_fill_and_its_t1(execution, horizon):
    bars = generate(symbols=2, bars=30, seed=5).with_columns(pl.col("symbol").cast(pl.String)).sort("symbol", "ts")
    labels = forward_return(bars, horizon, execution)
    rows = labels.join(forward_path(bars, horizon, execution), on=["symbol", "ts"], how="left")
    assert rows["path"].null_count() == 0 and rows.height > 0  # every labelled row has its path
    for symbol, part in bars.group_by("symbol"):
        ts, price = part["ts"].to_list(), part[EXECUTION_PRICE[execution]].to_numpy()
        for row in rows.filter(pl.col("symbol") == symbol[0]).iter_rows(named=True):
            fill, end = ts.index(row["ts"]) + 1, ts.index(row["t1"])  # bar positions of the fill and of t1
            # independently: the one-bar returns of the execution price that start at or after the fill
            # and end at or before t1 — nothing later
            np.testing.assert_allclose(row["path"], price[fill + 1 : end + 1] / price[fill:end] - 1.0, rtol=1e-12)
            assert max(row["path_end"]) <= row["t1"]
            assert np.prod(1.0 + np.array(row["path"])) - 1.0 == pytest.approx(row["label"], rel=1e-9)


def test_rows_without_a_full_path_have_none():
    bars = generate(symbols=1, bars=10, seed=1).with_columns(pl.col("symbol").cast(pl.String))
    path = forward_path(bars, 3, "next_close")
    assert path["path"].is_null().to_list() == [False] * 6 + [True] * 4  # the fill plus 3 bars must exist


def _train(runner, tmp_path, *sets: str):
    args = [a for item in sets for a in ("--set", item)]
    return runner.invoke(
        app,
        [
            "train",
            "--recipe",
            QUICKSTART,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--data-dir",
            str(tmp_path / "data"),
            "--set",
            'model.name="nbeats"',
            "--set",
            "model.params={}",
            *args,
        ],
    )


@pytest.mark.parametrize(
    "sets,asked",
    [
        (['label.kind="direction"'], "label.kind = 'direction'"),
        (["label.log=true"], "label.log = true"),
        (
            ['label.cross_sectional="rank"', "label.vol_scale=true"],
            "label.vol_scale = true, label.cross_sectional = 'rank'",
        ),
    ],
)
def test_a_path_model_with_another_label_is_refused_in_one_line(runner, tmp_path, sets, asked):
    result = _train(runner, tmp_path, *sets)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: recipe {QUICKSTART}: model 'nbeats' forecasts a path of one-bar returns (flag output = 'path'), "
        f"which needs label.kind = 'forward_return' with log, vol_scale and cross_sectional off, not {asked}; "
        "change the [label] section or use a single-score model"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # refused before any work


def test_a_split_only_run_trains_a_path_model_from_its_stored_rows(tmp_path):
    """`qfactory split` then `train --run`: the stored rows carry the path targets the model learns."""
    from quant_cli import stages
    from quant_cli.data.store import write_store
    from quant_cli.recipe import load_recipe

    write_store(tmp_path / "data", "p", generate(symbols=2, bars=120, seed=3), "test")
    recipe = load_recipe(
        None,
        [
            'data.dataset="p"',
            "features.sets=[]",
            'features.include=["ret_5"]',
            "label.horizon=3",
            'model.name="nbeats"',
            "model.params.seq_len=4",
            "model.params.hidden=8",
            "model.params.blocks=1",
            "train.epochs=1",
            "train.threads=1",
        ],
    )
    run, prepared = stages.split_new(recipe, tmp_path / "data", tmp_path / "runs")
    rows = prepared.segment("train")
    assert rows["path"].list.len().unique().to_list() == [3]  # (n, horizon) targets for every training row
    trained = stages.train_existing(run, tmp_path / "data")
    predictions = pl.read_parquet(trained.run.path / "predictions.parquet")
    assert predictions.height > 0 and predictions["score"].is_finite().all()


def test_walkforward_folds_train_a_path_model(runner, tmp_path):
    """Each fold's rows carry the path targets through to the fit (and the fold's score is the compounded path)."""
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "walkforward.toml")
    sets = [
        'data.dataset="wfp"',
        "data.synthetic.symbols=2",
        "data.synthetic.bars=300",
        'model.name="nbeats"',
        "model.params={seq_len=4, hidden=8, blocks=1}",
        "train.epochs=1",
        "train.threads=1",
        "features.sets=[]",
        'features.include=["ret_5"]',
        "walkforward.train=150",
        "walkforward.validation=30",
        "walkforward.test=60",
        "walkforward.step=60",
    ]
    result = runner.invoke(
        app,
        [
            "walkforward",
            "--recipe",
            recipe,
            "--data-dir",
            str(tmp_path / "data"),
            "--runs-dir",
            str(tmp_path / "runs"),
            *(a for s in sets for a in ("--set", s)),
        ],
    )
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    predictions = pl.read_parquet(next(run.rglob("predictions.parquet")))
    assert predictions.height > 0 and predictions["score"].is_finite().all()
