"""Leakage rules: labels from the execution price with t1; purge and embargo; train-only scaler."""

import numpy as np
import polars as pl
import pytest

from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import forward_return
from quant_cli.errors import DataError, RecipeError
from quant_cli.pipeline.preprocess import fit_preprocess, transform
from quant_cli.recipe import load_recipe
from quant_cli.splits.chronological import assign_segments, plan_split


@pytest.mark.parametrize(("execution", "column"), [("next_close", "close"), ("next_open", "open")])
@pytest.mark.parametrize("horizon", [1, 3])
def test_forward_return_is_measured_from_the_next_bar(small_panel, execution, column, horizon):
    labels = forward_return(small_panel, horizon, execution)
    one = small_panel.filter(pl.col("symbol") == "S000")
    price, ts = one[column].to_numpy(), one["ts"]
    got = labels.filter(pl.col("symbol") == "S000")
    expected = price[1 + horizon :] / price[1:-horizon] - 1.0
    np.testing.assert_allclose(got["label"].to_numpy(), expected[: got.height], rtol=1e-12)
    assert got["ts"].to_list() == ts[: got.height].to_list()
    assert got["t1"].to_list() == ts[1 + horizon :].to_list()
    assert got.height == one.height - 1 - horizon  # no label may need bars past the data


def test_next_open_needs_open_column(small_panel):
    with pytest.raises(DataError, match="needs an 'open' column"):
        forward_return(small_panel.select("symbol", "ts", "close"), 1, "next_open")


def _segmented(panel, horizon, embargo, **split):
    cfg = load_recipe(None, [f"split.embargo={embargo}"])["split"] | split
    labels = forward_return(panel, horizon, "next_close")
    plan = plan_split(labels["ts"], cfg, horizon)
    frame, dropped = assign_segments(labels, plan)
    return frame, plan, dropped


@pytest.mark.parametrize("horizon", [1, 5, 20])
@pytest.mark.parametrize("embargo", [0, 3, 10])
def test_no_label_interval_crosses_a_boundary(small_panel, horizon, embargo):
    frame, plan, dropped = _segmented(small_panel, horizon, embargo)
    train, val, test = (frame.filter(pl.col("segment") == s) for s in ("train", "val", "test"))
    assert train.height and val.height and test.height
    # No training label ends at or after the first validation/test row's time, and so on.
    assert train["t1"].max() < val["ts"].min() and train["t1"].max() < test["ts"].min()
    assert val["t1"].max() < test["ts"].min()
    assert sum(dropped["purged"].values()) > 0


@pytest.mark.parametrize("embargo", [1, 4, 12])
def test_embargo_drops_first_bars_after_each_boundary(small_panel, embargo):
    frame, plan, _ = _segmented(small_panel, 1, embargo)
    all_ts = small_panel["ts"].unique().sort()
    for segment, boundary in (("val", plan.val_start), ("test", plan.test_start)):
        first_kept = frame.filter(pl.col("segment") == segment)["ts"].min()
        gap = all_ts.filter((all_ts >= boundary) & (all_ts < first_kept)).len()
        assert gap == embargo


def test_purge_off_keeps_overlapping_rows(small_panel):
    frame, plan, _ = _segmented(small_panel, 5, 0, purge=False)
    assert frame.filter(pl.col("segment") == "train")["t1"].max() >= plan.val_start


def test_split_is_by_timestamp_across_symbols(small_panel):
    frame, plan, _ = _segmented(small_panel, 1, 1)
    per_symbol = frame.group_by("symbol", "segment").agg(pl.col("ts").min().alias("first"))
    assert per_symbol.filter(pl.col("segment") == "test")["first"].n_unique() == 1


def test_explicit_dates_and_errors(small_panel):
    frame, plan, _ = _segmented(small_panel, 1, 1, val_start="2015-08-03", test_start="2015-10-01")
    assert plan.val_start.isoformat().startswith("2015-08-03")
    with pytest.raises(RecipeError, match="must be given together"):
        _segmented(small_panel, 1, 1, val_start="2015-08-03")
    with pytest.raises(RecipeError, match="must be below 1"):
        _segmented(small_panel, 1, 1, train=0.7, val=0.3)
    with pytest.raises(DataError, match="too few for an embargo"):
        _segmented(generate(symbols=2, bars=30), 1, 20)


@pytest.mark.parametrize("scaler", ["zscore", "robust", "rank_gauss", "none"])
@pytest.mark.parametrize("fill", ["zero", "median", "none"])
def test_preprocessing_is_untouched_by_val_and_test_rows(small_panel, scaler, fill):
    frame, _, _ = _segmented(small_panel, 1, 1)
    frame = frame.with_columns(
        pl.col("label").alias("f"), pl.when(pl.col("ts").dt.day() == 3).then(None).otherwise(pl.col("label")).alias("g")
    )
    cfg = {"scaler": scaler, "fill": fill, "clip": 5.0}
    state = fit_preprocess(frame.filter(pl.col("segment") == "train"), ["f", "g"], cfg)
    shocked = frame.with_columns(
        pl.when(pl.col("segment") != "train").then(pl.col(c) * 1e6 + 5).otherwise(pl.col(c)).alias(c)
        for c in ("f", "g")
    )
    assert fit_preprocess(shocked.filter(pl.col("segment") == "train"), ["f", "g"], cfg) == state
    train = transform(frame.filter(pl.col("segment") == "train"), state)
    assert train["f"].null_count() == 0
    assert (train["g"].null_count() == 0) == (fill != "none")


def test_scalers_standardise_training_rows(small_panel):
    frame, _, _ = _segmented(small_panel, 1, 1)
    train = frame.filter(pl.col("segment") == "train").with_columns(pl.col("label").alias("f"))
    z = transform(train, fit_preprocess(train, ["f"], {"scaler": "zscore", "fill": "none", "clip": 5.0}))["f"]
    assert z.dtype == pl.Float32  # model inputs are float32 (pipeline/fitted.py)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6
    robust = transform(train, fit_preprocess(train, ["f"], {"scaler": "robust", "fill": "none", "clip": 3.0}))["f"]
    assert abs(robust.median()) < 1e-6 and robust.abs().max() <= 3.0
    gauss = transform(train, fit_preprocess(train, ["f"], {"scaler": "rank_gauss", "fill": "none", "clip": 5.0}))["f"]
    assert abs(gauss.mean()) < 0.05 and 0.8 < gauss.std() < 1.2
    in_order = gauss.gather(train["f"].arg_sort())
    assert (in_order.diff().drop_nulls() >= 0).all()  # monotone (tails clip, so ties are allowed)


def test_rank_gauss_maps_ties_to_their_mean_rank():
    """A 60/40 binary feature: each group takes the normal quantile of its mean rank (0.3, 0.8)."""
    from scipy.special import ndtri

    train = pl.DataFrame({"f": [0.0] * 600 + [1.0] * 400})
    state = fit_preprocess(train, ["f"], {"scaler": "rank_gauss", "fill": "none", "clip": 5.0})
    out = transform(pl.DataFrame({"f": [0.0, 1.0, 0.5, None]}), state)["f"].to_list()
    assert out[0] == pytest.approx(ndtri(0.3), abs=0.02) and out[1] == pytest.approx(ndtri(0.8), abs=0.02)
    assert out[0] < out[2] < out[1] and out[3] is None


def test_raw_matrix_is_the_same_for_a_few_rows_and_for_many():
    """A served request's few rows (cast by numpy) and a training slice (cast by polars) give the
    same float32 bits: float64, float32, integer, partly and wholly null columns, huge values."""
    from quant_cli.pipeline.preprocess import _FEW_ROWS, raw_matrix

    rng = np.random.default_rng(5)
    n = _FEW_ROWS + 10
    big = pl.DataFrame(
        {
            "f64": rng.normal(size=n) * 1e6,
            "f32": pl.Series(rng.normal(size=n), dtype=pl.Float32),
            "ints": rng.integers(-5, 5, n),
            "gaps": pl.Series([None if i % 3 else float(i) / 7 for i in range(n)], dtype=pl.Float64),
            "huge": pl.Series([1e300, -1e300, 1.0000001] * (n // 3) + [0.0] * (n % 3)),
            "none": pl.Series([None] * n, dtype=pl.Float64),
        }
    )
    columns = ["f64", "f32", "ints", "gaps", "huge", "none"]
    many = raw_matrix(big, columns)
    few = raw_matrix(big.head(10), columns)
    assert many.dtype == few.dtype == np.float32
    np.testing.assert_array_equal(few, many[:10])
    assert np.isnan(many[:, 5]).all() and np.isnan(many[1, 3])
    assert raw_matrix(pl.DataFrame({"a": [None, None]}), ["a"]).dtype == np.float32  # a Null-typed column


def test_fitting_the_scaler_reads_the_training_rows_once_per_block_of_columns():
    """Was one scan per column and statistic (robust: 2 x 158 scans of the feature table's join),
    which took a benchmark-size split from 10 s to 140 s. Now: a count, then one scan per block."""
    reads: list[int] = []

    def counted(frame: pl.DataFrame) -> pl.DataFrame:
        reads.append(frame.height)
        return frame

    rng = np.random.default_rng(2)
    columns = [f"f{i}" for i in range(40)]
    train = pl.DataFrame({c: rng.normal(size=500) for c in columns}).lazy().map_batches(counted)
    state = fit_preprocess(train, columns, {"scaler": "robust", "fill": "median", "clip": 3.0})
    assert len(state["scale"]) == 40 and len(reads) == 2
