"""Values of the feature families beyond "core": Alpha158 against an independent pandas reference,
benchmark alignment across calendars, multi-timeframe visibility, cross-sectional transforms,
and chunked builds (a universe streamed by symbol group) against the in-memory engine."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.features import REGISTRY, FeatureOptions, compute_features
from quant_cli.features.store import feature_table
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pandas_alpha158 import alpha158 as pandas_alpha158  # noqa: E402


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return generate(symbols=3, bars=160, seed=21)


def test_alpha158_is_158_qlib_factors_matching_a_pandas_reference(panel: pl.DataFrame) -> None:
    names = REGISTRY.resolve({"sets": ["alpha158"]}).names
    assert len(names) == 158 and names[:4] == ["KMID", "KLEN", "KMID2", "KUP"] and "VSUMD60" in names
    ours = compute_features(panel, names)
    ref = pl.from_pandas(pandas_alpha158(panel.to_pandas()))
    for name in names:
        a, b = ours[name].to_numpy().astype(float), ref[name].to_numpy().astype(float)
        b = np.where(np.isfinite(b), b, np.nan)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: warm-up differs")
        keep = ~np.isnan(a)
        np.testing.assert_allclose(a[keep], b[keep], rtol=1e-7, atol=1e-9, err_msg=name)


def test_rank_gives_tied_closes_their_average_rank() -> None:
    """RANK{w}: pandas rank(pct=True) of the last close in its window, ties sharing their mean rank
    (prices on a tick grid tie often; a flat stretch ties every close in the window)."""
    rng = np.random.default_rng(3)
    close = np.round(10 + np.cumsum(rng.choice([-0.1, 0.0, 0.1], 200)), 1)
    close[80:100] = close[80]
    days = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=i) for i in range(200)]
    bars = pl.DataFrame({"symbol": "A", "ts": days, "close": close}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))
    )
    ours = compute_features(bars, ["RANK5", "RANK20"])
    series = bars["close"].to_pandas()
    for w in (5, 20):
        expected = series.rolling(w).apply(lambda x: x.rank(pct=True).iloc[-1], raw=False).to_numpy()
        np.testing.assert_allclose(
            ours[f"RANK{w}"].to_numpy().astype(float), expected, rtol=1e-12, atol=0
        )  # pandas divides by w its own way


def _two_calendars() -> pl.DataFrame:
    """Symbol A trades every weekday; the benchmark B misses 2020-01-08 and 2020-01-13..17."""
    days = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=i) for i in range(40)]
    days = [d for d in days if d.weekday() < 5]
    missing = {dt.date(2020, 1, 8)} | {dt.date(2020, 1, d) for d in range(13, 18)}
    a = pl.DataFrame({"symbol": "A", "ts": days, "close": np.linspace(10, 20, len(days))})
    b_days = [d for d in days if d.date() not in missing]
    b = pl.DataFrame({"symbol": "B", "ts": b_days, "close": 100.0 + np.arange(len(b_days))})
    return pl.concat([a, b]).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_benchmark_is_forward_filled_within_staleness_and_never_back_filled() -> None:
    bars = _two_calendars()
    options = FeatureOptions(benchmark="B", max_staleness="3d")
    out = compute_features(bars, ["rel_strength_1"], options).filter(pl.col("symbol") == "A")
    value = dict(zip(out["ts"].dt.date().to_list(), out["rel_strength_1"].to_list()))
    close_a = dict(
        zip(
            bars.filter(pl.col("symbol") == "A")["ts"].dt.date().to_list(),
            bars.filter(pl.col("symbol") == "A")["close"].to_list(),
        )
    )
    # 01-08: B's 01-07 close stands in (1 day old), so B's return that day is zero
    assert value[dt.date(2020, 1, 8)] == pytest.approx(
        np.log(close_a[dt.date(2020, 1, 8)] / close_a[dt.date(2020, 1, 7)])
    )
    # 01-13 and 01-14: B's last bar (01-10) is within 3 days on 01-13, too old on 01-14 → null
    assert value[dt.date(2020, 1, 14)] is None and value[dt.date(2020, 1, 16)] is None
    assert value[dt.date(2020, 1, 13)] is not None


def test_default_staleness_is_five_bars_of_the_data_frequency() -> None:
    out = compute_features(_two_calendars(), ["rel_strength_1"], FeatureOptions(benchmark="B"))
    a = out.filter(pl.col("symbol") == "A")
    value = dict(zip(a["ts"].dt.date().to_list(), a["rel_strength_1"].to_list()))
    # B's last bar before the gap is Friday 01-10: 5 days old on 01-15 (kept), 6 days on 01-16 (null)
    assert value[dt.date(2020, 1, 15)] is not None and value[dt.date(2020, 1, 16)] is None


def test_unknown_benchmark_symbol_is_a_data_error() -> None:
    from quant_cli.errors import DataError

    with pytest.raises(DataError, match="features.benchmark: 'ZZZ' is not a symbol"):
        compute_features(_two_calendars(), ["bench_corr_5"], FeatureOptions(benchmark="ZZZ"))


def test_weekly_values_appear_only_after_the_week_closed(panel: pl.DataFrame) -> None:
    one = panel.filter(pl.col("symbol") == "S000")
    out = compute_features(one, ["mtf_ret_1w"])
    weeks = one.group_by_dynamic("ts", every="1w", closed="left", label="left").agg(pl.col("close").last())
    weekly_ret = weeks.with_columns(
        ret=pl.col("close") / pl.col("close").shift(1) - 1, visible=pl.col("ts") + pl.duration(weeks=1)
    )
    for row in weekly_ret.drop_nulls().head(10).iter_rows(named=True):
        seen = out.filter(pl.col("ts") >= row["visible"]).head(1)
        before = out.filter((pl.col("ts") < row["visible"]) & (pl.col("ts") >= row["visible"] - pl.duration(days=7)))
        assert seen["mtf_ret_1w"][0] == pytest.approx(row["ret"], rel=1e-12)  # first bar of the next week
        assert all(v != pytest.approx(row["ret"], rel=1e-12) for v in before["mtf_ret_1w"].to_list() if v is not None)


def test_cross_sectional_rank_and_zscore_by_hand(panel: pl.DataFrame) -> None:
    out = compute_features(panel, ["ret_5", "cs_rank_ret_5", "cs_z_ret_5"])
    for _, group in list(out.drop_nulls().group_by("ts"))[:20]:
        x = group["ret_5"].to_numpy()
        ranks = x.argsort().argsort() + 1
        np.testing.assert_allclose(group["cs_rank_ret_5"].to_numpy(), (ranks - 0.5) / len(x))
        np.testing.assert_allclose(group["cs_z_ret_5"].to_numpy(), (x - x.mean()) / x.std(ddof=1))


def test_sector_relative_return_uses_the_sector_mean(panel: pl.DataFrame) -> None:
    bars = panel.with_columns(sector=pl.when(pl.col("symbol") == "S000").then(pl.lit("x")).otherwise(pl.lit("y")))
    out = compute_features(bars, ["ret_5", "sector_rel_ret_5", "mkt_rel_ret_5"]).drop_nulls()
    alone = out.filter(pl.col("symbol") == "S000")
    assert (alone["sector_rel_ret_5"].abs() < 1e-15).all()  # the only symbol of its sector
    mean = out.group_by("ts").agg(pl.col("ret_5").mean().alias("m"))
    joined = out.join(mean, on="ts")
    np.testing.assert_allclose(
        joined["mkt_rel_ret_5"].to_numpy(), (joined["ret_5"] - joined["m"]).to_numpy(), atol=1e-15
    )


def test_chunked_build_equals_the_in_memory_engine(tmp_path: Path) -> None:
    """Many small symbol groups (cross-sectional pass over all of them, benchmark in every group)."""
    bars = generate(symbols=7, bars=200, seed=4)
    data_dir = tmp_path / "data"
    write_store(data_dir, "d", bars, "test")
    section = [
        'features.sets=["core", "cross_asset"]',
        'features.benchmark="S003"',
        'features.cross_sectional=["ret_20"]',
        'features.include=["RSV5", "mtf_rsi_1w"]',
        'features.timeframes=["1w"]',
    ]
    recipe = load_recipe(None, ['data.dataset="d"', 'data.start="2015-03-02"', *section])
    chunked = feature_table(recipe, data_dir, chunk_rows=450)  # about 2 symbols per group
    assert len(list((chunked.path / "table").glob("part-*.parquet"))) >= 3
    expected = compute_features(bars, chunked.columns, FeatureOptions(benchmark="S003"))
    expected = expected.filter(pl.col("ts") >= dt.datetime(2015, 3, 2, tzinfo=dt.timezone.utc))
    assert chunked.frame.equals(expected)


def test_features_show_describes_a_version(runner, tmp_path: Path) -> None:  # noqa: ANN001
    write_store(tmp_path / "data", "d", generate(symbols=2, bars=120, seed=1), "test")
    built = runner.invoke(app, ["features", "--set", 'data.dataset="d"', "--recipe", _recipe(tmp_path), "--json", "-q"])
    assert built.exit_code == 0, built.output
    fingerprint = json.loads(built.stdout)["fingerprint"]
    shown = runner.invoke(app, ["features", "show", fingerprint[:6]])
    assert shown.exit_code == 0, shown.output
    assert f"fingerprint: {fingerprint}" in shown.stdout and "NULL_SHARE" in shown.stdout and "ret_20  " in shown.stdout
    missing = runner.invoke(app, ["features", "show", "ffffffff"])
    assert missing.exit_code == 2
    assert missing.stderr.strip().splitlines() == [
        "error: feature version 'ffffffff' not found in data home "
        f"{tmp_path / 'data'}; list versions with `qfactory features ls`"
    ]


def _recipe(tmp_path: Path) -> str:
    path = tmp_path / "r.toml"
    path.write_text('[data]\ndataset = "d"\n[features]\nsets = ["core"]\n')
    return str(path)


def test_hourly_values_from_five_minute_bars_wait_for_the_hour_to_close() -> None:
    bars = generate(symbols=1, bars=24 * 12, frequency="5m", seed=3)  # one day of 5-minute bars
    out = compute_features(bars, ["mtf_ret_1h"])
    hourly = bars.group_by_dynamic("ts", every="1h", closed="left", label="left").agg(pl.col("close").last())
    expected = hourly.with_columns(
        ret=pl.col("close") / pl.col("close").shift(1) - 1, visible=pl.col("ts") + pl.duration(hours=1)
    )
    for row in expected.drop_nulls().iter_rows(named=True):
        at_close = out.filter(pl.col("ts") == row["visible"])
        if at_close.height:  # the bar stamped at the hour's end is the first to see it
            assert at_close["mtf_ret_1h"][0] == pytest.approx(row["ret"], rel=1e-12)
        last_inside = out.filter(pl.col("ts") == row["visible"] - pl.duration(minutes=5))
        assert last_inside["mtf_ret_1h"][0] != pytest.approx(
            row["ret"], rel=1e-12
        )  # not while the hour is still forming


def test_a_chunked_build_gives_each_notice_once(tmp_path: Path) -> None:
    write_store(tmp_path / "data", "d", generate(symbols=4, bars=120, seed=2).drop("volume"), "test")
    recipe = load_recipe(None, ['data.dataset="d"', 'features.include=["VWAP0", "VMA5", "ret_5"]'])
    reporter = CollectingReporter()
    feature_table(recipe, tmp_path / "data", chunk_rows=120, reporter=reporter)  # four symbol groups
    err = "\n".join(reporter.texts("notice"))
    assert err.count("no vwap column") == 1 and err.count("skipped 2 feature(s)") == 1  # VMA5 and core volume_z_20


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ('split.embargo="5x"', "'5x'"),
        ('features.timeframes=["1w", "0d"]', "'0d'"),
        ('features.max_staleness="soon"', "'soon'"),
    ],
)
def test_bad_durations_are_refused_when_the_recipe_loads(runner, tmp_path: Path, override: str, value: str) -> None:  # noqa: ANN001
    result = runner.invoke(
        app, ["split", "--recipe", _recipe(tmp_path), "--set", override]
    )  # no dataset: nothing else runs
    key = override.split("=")[0]
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: --set {override}: '{key}' must be a duration, a count and a unit "
        f"s/m/h/d/w such as '5d' or '12h', got {value}"
    ]
