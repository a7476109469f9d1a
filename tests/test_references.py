"""Cross-asset reference groups (issue 21 §5; features/references.py) on calendars that differ:
weekday-only equities against 7-day crypto references (and the reverse), checked against a small
numpy reference implementation, for causality, for staleness and for the recipe's error lines."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_cli.errors import RecipeError
from quant_cli.features import REGISTRY, FeatureOptions, compute_features
from quant_cli.features.references import References, feature_by_name, reference_only
from quant_cli.features.testing import assert_causal, perturb_after

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)  # a Monday
DAYS = 120
WINDOWS = [1, 5, 20]
SECTION = {
    "sets": [],
    "include": ["ret_5"],
    "windows": WINDOWS,
    "references": {"crypto": ["BTC-USD", "ETH-USD"], "macro": ["TNX"]},
}


def _symbol(name: str, days: list[int], seed: int, hour: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
    ts = [START + dt.timedelta(days=d, hours=hour) for d in days]
    return pl.DataFrame({"symbol": name, "ts": ts, "close": close})


def _weekdays() -> list[int]:
    return [d for d in range(DAYS) if (START + dt.timedelta(days=d)).weekday() < 5]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Equities AAA/BBB and the TNX reference close on weekdays at 21:00 UTC; BTC-USD/ETH-USD have a
    bar every day at 00:00 (the next crypto bar is always the NEAREST one: a `nearest` join would
    leak), and BTC-USD misses a 9-day stretch (so its aligned close goes stale)."""
    weekdays, every = _weekdays(), list(range(DAYS))
    gap = [d for d in every if not 60 <= d < 69]
    frames = [
        _symbol("AAA", weekdays, 1, hour=21),
        _symbol("BBB", weekdays[10:], 2, hour=21),  # listed late
        _symbol("TNX", weekdays, 3, hour=21),
        _symbol("BTC-USD", gap, 4),
        _symbol("ETH-USD", every, 5),
    ]
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))).sort("symbol", "ts")


def _options(**extra) -> FeatureOptions:
    return FeatureOptions.from_section(SECTION, bar_spacing="1d", **extra)


FEATURES = REGISTRY.resolve(SECTION).features


# ---- a numpy reference ----------------------------------------------------------------------------


def _aligned(ts: np.ndarray, ref_ts: np.ndarray, ref_close: np.ndarray, stale: np.timedelta64) -> np.ndarray:
    """The reference's last close at or before each ts, if at most `stale` old; else NaN."""
    at = np.searchsorted(ref_ts, ts, side="right") - 1
    ok = (at >= 0) & (ts - ref_ts[np.maximum(at, 0)] <= stale)
    return np.where(ok, ref_close[np.maximum(at, 0)], np.nan)


def _log_diff(x: np.ndarray) -> np.ndarray:
    return np.r_[np.nan, np.diff(np.log(x))]


def _rolling(x: np.ndarray, y: np.ndarray, w: int, stat: str) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t in range(w - 1, len(x)):
        a, b = x[t - w + 1 : t + 1], y[t - w + 1 : t + 1]
        if np.isnan(a).any() or np.isnan(b).any():
            continue
        if stat == "ret":
            out[t] = b.sum()
        elif stat == "vol":
            out[t] = b.std(ddof=1)
        elif stat == "corr":
            out[t] = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else np.nan
        else:
            with np.errstate(divide="ignore", invalid="ignore"):  # a flat reference: 0/0, missing
                out[t] = np.cov(a, b, ddof=1)[0, 1] / b.var(ddof=1)
    return out


def _reference(bars: pl.DataFrame, symbol: str, stale_days: int = 5) -> dict[str, np.ndarray]:
    """Every reference feature of `symbol`, computed from scratch in numpy."""
    stale = np.timedelta64(stale_days, "D")

    def series(name: str) -> tuple[np.ndarray, np.ndarray]:
        one = bars.filter(pl.col("symbol") == name).sort("ts")
        return one["ts"].to_numpy(), one["close"].to_numpy()

    ts, close = series(symbol)
    own = _log_diff(close)
    returns = {s: _log_diff(_aligned(ts, *series(s), stale)) for s in ("BTC-USD", "ETH-USD", "TNX")}
    groups = {"crypto": ["BTC-USD", "ETH-USD"], "macro": ["TNX"]}
    out = {}
    for group, members in groups.items():
        stacked = np.vstack([returns[m] for m in members])
        with np.errstate(invalid="ignore"):
            mean = np.where(np.isnan(stacked).all(axis=0), np.nan, np.nanmean(stacked, axis=0))
        for stat, shortest in (("ret", 1), ("vol", 2), ("corr", 3), ("beta", 3)):
            for w in (w for w in WINDOWS if w >= shortest):
                for member in members:
                    out[f"ref_{group}_{member}_{stat}{w}"] = _rolling(own, returns[member], w, stat)
                out[f"refgrp_{group}_{stat}{w}"] = _rolling(own, mean, w, stat)
    return out


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
@pytest.mark.parametrize("external", [False, True], ids=["same_dataset", "reference_bars"])
def test_values_match_a_numpy_reference_on_weekday_and_7_day_calendars(bars, external) -> None:
    refs = ["BTC-USD", "ETH-USD", "TNX"]
    if external:  # references given apart from the symbols (a build's other dataset)
        symbols, ref_bars = reference_only(bars, References.from_section({**SECTION["references"], "dataset": "x"}))
        options = _options(reference_bars=ref_bars)
    else:
        symbols, options = bars, _options()
    out = compute_features(symbols, FEATURES, options)
    names = [f.name for f in FEATURES if f.name.startswith("ref")]
    assert len(names) == 5 * (3 + 2 + 2 + 2)  # 3 members + 2 groups; vol needs w >= 2, corr/beta w >= 3
    assert set(out["symbol"].unique()) == ({"AAA", "BBB"} if external else {"AAA", "BBB", *refs})
    for symbol in ("AAA", "BBB", "ETH-USD"):
        if external and symbol == "ETH-USD":
            continue
        got = out.filter(pl.col("symbol") == symbol)
        expected = _reference(bars, symbol)
        for name in names:
            values = got[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            np.testing.assert_allclose(values, expected[name], rtol=1e-9, atol=1e-13, err_msg=f"{symbol} {name}")


def test_exact_values_across_the_weekend(bars) -> None:
    """An equity's Monday 21:00 bar sees the crypto move from Friday 00:00 to Monday 00:00 (the
    crypto bars at or before its own bars, weekend included, none seen early); a 7-day symbol's
    Sunday and Monday 00:00 bars still see Friday's 21:00 TNX close (return 0), Tuesday sees Monday's."""
    out = compute_features(bars, FEATURES, _options())
    close = {s: dict(zip(*bars.filter(pl.col("symbol") == s).select("ts", "close"))) for s in ("ETH-USD", "TNX")}
    day = {d: START + dt.timedelta(days=d) for d in (11, 13, 14, 15)}  # Friday, Sunday, Monday, Tuesday
    late = {d: t + dt.timedelta(hours=21) for d, t in day.items()}

    def value(symbol: str, ts: dt.datetime, name: str) -> float:
        return out.filter((pl.col("symbol") == symbol) & (pl.col("ts") == ts))[name].item()

    assert value("AAA", late[14], "ref_crypto_ETH-USD_ret1") == pytest.approx(
        np.log(close["ETH-USD"][day[14]] / close["ETH-USD"][day[11]]), rel=1e-12
    )
    assert value("ETH-USD", day[13], "ref_macro_TNX_ret1") == 0.0
    assert value("ETH-USD", day[14], "ref_macro_TNX_ret1") == 0.0
    assert value("ETH-USD", day[15], "ref_macro_TNX_ret1") == pytest.approx(
        np.log(close["TNX"][late[14]] / close["TNX"][late[11]]), rel=1e-12
    )
    # the group's one-bar return is the mean of its members' (both present here)
    both = value("AAA", late[14], "ref_crypto_ETH-USD_ret1") + value("AAA", late[14], "ref_crypto_BTC-USD_ret1")
    assert value("AAA", late[14], "refgrp_crypto_ret1") == pytest.approx(both / 2, rel=1e-12)


def test_a_stale_reference_is_null_never_back_filled(bars) -> None:
    """BTC-USD has no bars on days 60-68: within max_staleness its last close stands in; past it the
    feature is null (not the next, later bar); the group then averages the members it has."""
    section = {**SECTION, "max_staleness": "3d"}
    out = compute_features(bars, FEATURES, FeatureOptions.from_section(section, bar_spacing="1d"))
    aaa = out.filter(pl.col("symbol") == "AAA")
    day = ((pl.col("ts") - START).dt.total_days()).alias("day")
    btc = aaa.select(day, "ref_crypto_BTC-USD_ret1", "ref_crypto_ETH-USD_ret1", "refgrp_crypto_ret1")
    by_day = {row[0]: row[1:] for row in btc.iter_rows()}
    assert by_day[60][0] == 0.0  # Friday 60, 21:00: day 59's close, < 2 days old: no move since AAA's last bar
    assert all(by_day[d][0] is None for d in (63, 64, 65, 66, 67))  # over 3 days since day 59: null
    assert by_day[64][2] == by_day[64][1]  # the group is ETH-USD alone while BTC-USD is stale
    assert by_day[70][0] is None  # BTC-USD is back (day 69), but AAA's previous bar (day 67) had none
    assert by_day[71][0] is not None
    wide = compute_features(bars, FEATURES, _options())  # default staleness 5 bars (5 days)
    aaa = wide.filter(pl.col("symbol") == "AAA").select(day, "ref_crypto_BTC-USD_ret1")
    by_day = dict(aaa.iter_rows())
    assert by_day[63] == 0.0 and by_day[64] is None  # 4 days 21 hours old stands in; 5 days 21 hours does not


# ---- causality ------------------------------------------------------------------------------------


def test_reference_features_are_causal_on_differing_calendars(bars) -> None:
    assert_causal(FEATURES, bars, options=_options(), seed=3)


def test_reference_features_from_reference_bars_are_causal(bars) -> None:
    """References given apart (another dataset): rewriting or removing their bars after t changes no
    value at or before t."""
    refs = References.from_section({**SECTION["references"], "dataset": "x"})

    def compute(frame: pl.DataFrame) -> pl.DataFrame:
        symbols, ref_bars = reference_only(frame, refs)
        return compute_features(symbols, FEATURES, _options(reference_bars=ref_bars))

    assert_causal(compute, bars, seed=4)


def test_rewriting_only_reference_bars_after_t_changes_nothing_up_to_t(bars) -> None:
    t = START + dt.timedelta(days=50, hours=21)
    is_ref = pl.col("symbol").is_in(["BTC-USD", "ETH-USD", "TNX"])
    rewritten = pl.concat([bars.filter(~is_ref), perturb_after(bars.filter(is_ref), t, seed=9)]).sort("symbol", "ts")
    base = compute_features(bars, FEATURES, _options()).filter(pl.col("symbol") == "AAA")
    other = compute_features(rewritten, FEATURES, _options()).filter(pl.col("symbol") == "AAA")
    names = [f.name for f in FEATURES if f.name.startswith("ref")]
    past = pl.col("ts") <= t
    assert base.filter(past).select(names).equals(other.filter(past).select(names))
    assert not base.filter(~past).select(names).equals(other.filter(~past).select(names))  # the future did change


# ---- names and the recipe table -------------------------------------------------------------------


def test_names_parse_back_and_order_is_canonical() -> None:
    section = {**SECTION, "references": {"macro": ["TNX"], "crypto": ["ETH-USD", "BTC-USD"], "odd": ["BRK_B.X"]}}
    names = REGISTRY.resolve(section).names
    assert names == REGISTRY.resolve({**section, "references": dict(reversed(section["references"].items()))}).names
    for name in names:
        assert REGISTRY.feature(name).name == name
    assert REGISTRY.feature("ref_odd_BRK_B.X_corr20").inputs == ("close", "ref_close[BRK_B.X]")
    assert REGISTRY.feature("refgrp_crypto_beta20").inputs == ("close", "ref_group_return[crypto]")
    assert feature_by_name("ret_5") is None and feature_by_name("ref_crypto_BTC") is None
    assert REGISTRY.feature("cs_rank_refgrp_crypto_ret20").sources[0].name == "refgrp_crypto_ret20"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"crypto_x": ["A"]},
            "features.references: group name 'crypto_x' must be 1-32 letters or digits starting with a letter "
            "(no '_': it separates the parts of a feature name); e.g. crypto",
        ),
        (
            {"crypto": []},
            "features.references.crypto: expected a non-empty list of symbols, got []; "
            'e.g. crypto = ["BTC-USD", "ETH-USD"]',
        ),
        (
            {"crypto": "BTC-USD"},
            "features.references.crypto: expected a non-empty list of symbols, got 'BTC-USD'; "
            'e.g. crypto = ["BTC-USD", "ETH-USD"]',
        ),
        ({"crypto": ["A", "A"]}, "features.references.crypto: symbol 'A' is listed twice; list each member once"),
        (
            {"dataset": 3, "crypto": ["A"]},
            'features.references.dataset: expected a dataset name, got 3; e.g. dataset = "refs"',
        ),
        ({"dataset": "refs"}, 'features.references: names no group; add one, e.g. crypto = ["BTC-USD", "ETH-USD"]'),
    ],
)
def test_bad_tables_are_one_line(table, message) -> None:
    with pytest.raises(RecipeError) as caught:
        References.from_section(table)
    assert str(caught.value) == message


def test_the_same_dataset_named_explicitly_is_not_external() -> None:
    assert References.from_section({"dataset": "eq", "a": ["X"]}, home="eq").external is False
    refs = References.from_section({"dataset": "refs", "a": ["X"]}, home="eq")
    assert refs.external and References.from_json(refs.to_json()) == refs
    options = dataclasses.replace(FeatureOptions(), references=refs)
    assert options.references.columns() == {"ref_close[X]", "ref_group_return[a]"}


def test_include_and_exclude_name_reference_features() -> None:
    """A concrete reference name can be dropped (or the cross_asset tag drops them all) and added, e.g.
    a window outside features.windows; never silently ignored."""
    names = REGISTRY.resolve({**SECTION, "exclude": ["ref_crypto_BTC-USD_ret5", "refgrp_macro_vol20"]}).names
    full = REGISTRY.resolve(SECTION).names
    assert set(full) - set(names) == {"ref_crypto_BTC-USD_ret5", "refgrp_macro_vol20"}
    assert [n for n in REGISTRY.resolve({**SECTION, "exclude": ["cross_asset"]}).names if n.startswith("ref")] == []
    extra = REGISTRY.resolve({**SECTION, "include": ["ret_5", "refgrp_crypto_corr7"]}).names
    assert extra == [*full, "refgrp_crypto_corr7"]
