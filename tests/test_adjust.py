"""Split/dividend adjustment (issue 9 §4): features, labels and the backtest on adjusted prices."""

from __future__ import annotations

import polars as pl
import pytest

from quant_cli import stages
from quant_cli.backtest.engine import period_returns
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import forward_return
from quant_cli.io import read_json
from quant_cli.pipeline.adjust import Adjustment, resolve
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter

SPLIT_AT = 270  # bar index of the 2:1 split: inside the test segment


def split_panel() -> tuple[pl.DataFrame, object]:
    """S000 splits 2:1 at bar SPLIT_AT: raw prices before it are twice the adjusted ones."""
    bars = generate(symbols=4, bars=300, seed=11).with_columns(pl.col("close").alias("adj_close"))
    day = bars["ts"].unique().sort()[SPLIT_AT]
    before = (pl.col("symbol") == "S000") & (pl.col("ts") < day)
    raw = bars.with_columns(
        *[
            pl.when(before).then(pl.col(c) * 2.0).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ],
        pl.when(before).then(pl.col("volume") / 2.0).otherwise(pl.col("volume")).alias("volume"),
    )
    return raw, day


def _across_split(labels: pl.DataFrame, day) -> float:
    """The label decided two bars before the split: filled at the last raw close, measured at the first split one."""
    return labels.filter((pl.col("symbol") == "S000") & (pl.col("ts") < day)).sort("ts")["label"][-2]


def test_adjusted_label_across_a_split_is_no_crash():
    raw, day = split_panel()
    adjusted = Adjustment("split_dividend").apply(raw)
    assert _across_split(forward_return(raw, 1, "next_close"), day) == pytest.approx(-0.5, abs=0.1)
    assert abs(_across_split(forward_return(adjusted, 1, "next_close"), day)) < 0.1
    returns = period_returns(adjusted, "next_close").filter(pl.col("symbol") == "S000")
    assert returns["ret"].abs().max() < 0.1
    ratio = adjusted.filter(pl.col("symbol") == "S000").select((pl.col("volume") * pl.col("close")).alias("dollars"))
    assert ratio.equals(
        raw.filter(pl.col("symbol") == "S000").select((pl.col("volume") * pl.col("close")).alias("dollars"))
    )


def test_symbols_without_adj_close_keep_raw_prices_with_one_notice():
    raw, _ = split_panel()
    raw = raw.with_columns(
        pl.when(pl.col("symbol") == "S002").then(None).otherwise(pl.col("adj_close")).alias("adj_close")
    )
    reporter = CollectingReporter()
    adjustment = resolve(None, raw, reporter)
    assert adjustment == Adjustment("split_dividend", ("S002",))
    assert reporter.texts("notice") == [
        "data.adjust = 'split_dividend': 1 symbol(s) have no adj_close on some bars and use raw prices: S002"
    ]
    adjusted = adjustment.apply(raw)
    assert adjusted.filter(pl.col("symbol") == "S002").equals(raw.filter(pl.col("symbol") == "S002"))
    assert resolve("none", raw) == Adjustment("none") and resolve(None, raw.drop("adj_close")) == Adjustment("none")


@pytest.mark.parametrize("adjust", [None, "none"])
def test_runs_label_and_backtest_on_adjusted_prices(tmp_path, adjust):
    raw, day = split_panel()
    write_store(tmp_path / "data", "p", raw, "test")
    overrides = [
        'data.dataset="p"',
        'features.sets=["core"]',
        "model.params.n_estimators=20",
        "train.threads=1",
        'backtest.strategy="sign"',
    ]
    recipe = load_recipe(None, overrides + ([f'data.adjust="{adjust}"'] if adjust else []))
    run = stages.train_new(recipe, tmp_path / "data", tmp_path / "runs").run
    stages.backtest_existing(run, tmp_path / "data")
    predictions = pl.read_parquet(run.path / "predictions.parquet")
    label = _across_split(predictions, day)
    curve = pl.read_parquet(run.path / "backtest" / "equity.parquet")
    manifest = read_json(run.path / "manifest.json")
    if adjust is None:  # the default: adjusted, since the dataset has adj_close
        assert manifest["adjust"] == {"mode": "split_dividend", "raw_symbols": []}
        assert abs(label) < 0.1 and curve["gross"].abs().max() < 0.1
    else:
        assert manifest["adjust"]["mode"] == "none"
        assert label == pytest.approx(-0.5, abs=0.1) and curve["gross"].abs().max() > 0.1


def test_an_explicit_split_dividend_without_adj_close_says_prices_stay_raw():
    """`data.adjust = "split_dividend"` on bars with no adj_close column silently used raw prices."""
    bars = generate(symbols=2, bars=30, seed=3)
    reporter = CollectingReporter()
    assert resolve("split_dividend", bars, reporter) == Adjustment("none")
    assert reporter.texts("notice") == [
        "data.adjust = 'split_dividend', but the dataset has no adj_close column: every symbol uses raw prices "
        "(the run manifest records adjust mode 'none'); ingest a source with adj_close, or set data.adjust = \"none\""
    ]
    quiet = CollectingReporter()
    resolve(None, bars, quiet)  # the default asks for nothing, so it says nothing
    assert quiet.texts("notice") == []
