"""cs_rank_* / cs_z_* features: ties take the average rank (never the symbol's name), and a
missing (null or NaN) value is neither ranked nor counted — it can never rank first."""

from __future__ import annotations

import polars as pl
import pytest

from quant_cli.data.synthetic import generate
from quant_cli.features import compute_features
from quant_cli.features.cross_asset import cs_rank, cs_z


@pytest.fixture(scope="module")
def tied_panel() -> pl.DataFrame:
    """S000 and S001 with identical prices (tied features), S003 starting 20 bars late (nulls)."""
    bars = generate(symbols=4, bars=60, seed=3)
    twin = bars.filter(pl.col("symbol") == "S000").with_columns(pl.lit("S001").alias("symbol"))
    late = bars.filter(pl.col("symbol") == "S003").slice(20)
    rest = bars.filter(pl.col("symbol") == "S002")
    return pl.concat([bars.filter(pl.col("symbol") == "S000"), twin, rest, late]).sort("symbol", "ts")


def percentiles(x: list[float]) -> list[float]:
    """(average rank - 0.5) / count, ties sharing the mean of their places."""
    return [(sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 - 0.5) / len(x) for xi in x]


def test_tied_values_share_the_average_rank(tied_panel: pl.DataFrame) -> None:
    out = compute_features(tied_panel, ["ret_5", "cs_rank_ret_5"]).drop_nulls()
    for _, day in out.group_by("ts"):
        day = day.sort("symbol")
        ranks = dict(zip(day["symbol"], day["cs_rank_ret_5"]))
        assert ranks["S000"] == ranks["S001"]
        assert day["cs_rank_ret_5"].to_list() == pytest.approx(percentiles(day["ret_5"].to_list()))


def test_a_symbol_without_a_value_is_not_ranked_or_counted(tied_panel: pl.DataFrame) -> None:
    out = compute_features(tied_panel, ["ret_5", "cs_rank_ret_5", "cs_z_ret_5"])
    day = out.filter(pl.col("ts") == tied_panel["ts"].unique().sort()[22]).sort("symbol")  # S003 listed 2 bars ago
    assert day["symbol"].to_list()[-1] == "S003" and day["ret_5"][-1] is None
    assert day["cs_rank_ret_5"][-1] is None and day["cs_z_ret_5"][-1] is None
    assert day["cs_rank_ret_5"].to_list()[:3] == pytest.approx(percentiles(day["ret_5"].to_list()[:3]))


def test_nan_values_are_neither_ranked_first_nor_counted() -> None:
    frame = pl.DataFrame({"ts": [1] * 5, "x": [float("nan"), 3.0, 1.0, None, 2.0]})
    out = frame.select(cs_rank(pl.col("x")).over("ts").alias("rank"), cs_z(pl.col("x")).over("ts").alias("z"))
    assert out["rank"].to_list() == [None, pytest.approx(2.5 / 3), pytest.approx(0.5 / 3), None, pytest.approx(1.5 / 3)]
    assert out["z"].to_list() == [None, pytest.approx(1.0), pytest.approx(-1.0), None, pytest.approx(0.0)]
