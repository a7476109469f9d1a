"""Labels measured from the execution price, each with its end time `t1` (DESIGN.md §3).

A decision made at the close of bar t is filled at bar t+1 (`next_open` or `next_close`), so a
horizon-h forward return is price[t+1+h] / price[t+1] - 1 with t1 = ts[t+1+h]. With h = 1 this is
exactly the return the backtest books for holding the position one bar.

Volatility used for scaling and barriers is an EWM standard deviation of close-to-close log
returns up to and including bar t: known at decision time, never later.
"""

from __future__ import annotations

import polars as pl

from quant_cli.errors import DataError

EXECUTION_PRICE = {"next_open": "open", "next_close": "close"}
CLASSIFICATION_KINDS = ("direction", "triple_barrier")
LABEL_COLUMNS = ["symbol", "ts", "label", "t1"]


def execution_price(bars: pl.DataFrame, execution: str) -> pl.Expr:
    column = EXECUTION_PRICE[execution]
    if column not in bars.columns:
        raise DataError(
            f"backtest.execution = {execution!r} needs an '{column}' column, but the dataset has only "
            f"{[c for c in bars.columns if c not in ('symbol', 'ts')]}; use execution = 'next_close'"
        )
    return pl.col(column)


def _forward(price: pl.Expr, k: int) -> pl.Expr:
    """Return from the fill at t+1 to the execution price k bars later."""
    return price.shift(-(1 + k)).over("symbol") / price.shift(-1).over("symbol") - 1.0


def _t1(k: int) -> pl.Expr:
    return pl.col("ts").shift(-(1 + k)).over("symbol")


def ewm_volatility(span: int) -> pl.Expr:
    """EWM std of 1-bar log returns of close, through bar t (warm-up rows are null)."""
    log_ret = pl.col("close").log().diff()
    return log_ret.ewm_std(span=span, adjust=False, min_samples=span).over("symbol")


def forward_return(bars: pl.DataFrame, horizon: int, execution: str, log: bool = False) -> pl.DataFrame:
    """Columns symbol, ts, label, t1; rows whose label would need bars past the data are dropped."""
    ret = _forward(execution_price(bars, execution), horizon)
    label = (1.0 + ret).log() if log else ret
    return _finish(bars.sort("symbol", "ts").select("symbol", "ts", label.alias("label"), _t1(horizon).alias("t1")))


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop_nulls(["label", "t1"]).filter(pl.col("label").is_finite())


def _vol_scaled(bars: pl.DataFrame, cfg: dict, execution: str) -> pl.DataFrame:
    base = forward_return(bars, cfg["horizon"], execution, cfg["log"])
    vol = bars.sort("symbol", "ts").select("symbol", "ts", ewm_volatility(cfg["vol_span"]).alias("vol"))
    scaled = base.join(vol, on=["symbol", "ts"]).with_columns(pl.col("label") / (pl.col("vol") * cfg["horizon"] ** 0.5))
    return _finish(scaled.select(LABEL_COLUMNS))


def cross_sectional(labels: pl.DataFrame, how: str) -> pl.DataFrame:
    """Rank (centred on 0, in [-0.5, 0.5]) or z-score labels across symbols at each timestamp.

    A row's value now depends on every symbol's return at its timestamp, so its end time becomes
    the LATEST t1 among them: with different calendars (a halt, a holiday) one symbol's horizon
    can end later than another's, and purging by the row's own t1 would let that later
    information into a training label.
    """
    if how == "none":
        return labels
    labels = labels.with_columns(pl.col("t1").max().over("ts"))
    n = pl.len().over("ts")
    if how == "rank":
        value = pl.when(n > 1).then((pl.col("label").rank("average").over("ts") - 1) / (n - 1) - 0.5).otherwise(0.0)
    else:
        std = pl.col("label").std().over("ts")
        value = pl.when(std > 0).then((pl.col("label") - pl.col("label").mean().over("ts")) / std).otherwise(0.0)
    return labels.with_columns(value.alias("label"))


def direction(bars: pl.DataFrame, horizon: int, execution: str, threshold: float) -> pl.DataFrame:
    """-1 / 0 / 1: the forward return below -threshold, inside the dead zone, above +threshold."""
    base = forward_return(bars, horizon, execution)
    cls = pl.when(pl.col("label") > threshold).then(1.0).when(pl.col("label") < -threshold).then(-1.0).otherwise(0.0)
    return base.with_columns(cls.alias("label"))


def triple_barrier(bars: pl.DataFrame, cfg: dict, execution: str) -> pl.DataFrame:
    """-1 / 0 / 1 from the first barrier touched after the fill; t1 is the touch time.

    Barriers sit at +profit_take and -stop_loss times the EWM volatility at t (0 disables one);
    the vertical barrier is `horizon` bars after the fill. Touches are checked on the execution
    price path at bars t+2 .. t+1+horizon. Rows without a full horizon of data are dropped.
    """
    horizon, price = cfg["horizon"], execution_price(bars, execution)
    sorted_bars = bars.sort("symbol", "ts")
    paths = sorted_bars.select(
        "symbol",
        "ts",
        ewm_volatility(cfg["vol_span"]).alias("vol"),
        *[_forward(price, k).alias(f"r{k}") for k in range(1, horizon + 1)],
        *[_t1(k).alias(f"t{k}") for k in range(1, horizon + 1)],
    ).drop_nulls()
    up = pl.col("vol") * cfg["profit_take"] if cfg["profit_take"] > 0 else pl.lit(float("inf"))
    down = pl.col("vol") * cfg["stop_loss"] if cfg["stop_loss"] > 0 else pl.lit(float("inf"))
    # coalesce over k in order picks the FIRST bar whose return crosses a barrier
    first = pl.coalesce(
        [pl.when((pl.col(f"r{k}") >= up) | (pl.col(f"r{k}") <= -down)).then(pl.lit(k)) for k in range(1, horizon + 1)]
    )
    return _barrier_outcome(paths.with_columns(first.alias("hit")), horizon, cfg["vertical"])


def _barrier_outcome(paths: pl.DataFrame, horizon: int, vertical: str) -> pl.DataFrame:
    k = pl.col("hit").fill_null(horizon)
    ret_at = pl.coalesce([pl.when(k == j).then(pl.col(f"r{j}")) for j in range(1, horizon + 1)])
    t1_at = pl.coalesce([pl.when(k == j).then(pl.col(f"t{j}")) for j in range(1, horizon + 1)])
    sign = ret_at.sign()
    label = pl.when(pl.col("hit").is_null() & pl.lit(vertical == "zero")).then(0.0).otherwise(sign)
    return paths.select("symbol", "ts", label.cast(pl.Float64).alias("label"), t1_at.alias("t1"))


def is_classification(label_cfg: dict) -> bool:
    return label_cfg["kind"] in CLASSIFICATION_KINDS


def make_labels(bars: pl.DataFrame, cfg: dict, execution: str) -> pl.DataFrame:
    """symbol, ts, label, t1 for the recipe's [label] section."""
    if cfg["kind"] == "direction":
        return direction(bars, cfg["horizon"], execution, cfg["threshold"])
    if cfg["kind"] == "triple_barrier":
        return triple_barrier(bars, cfg, execution)
    labels = (
        _vol_scaled(bars, cfg, execution)
        if cfg["vol_scale"]
        else forward_return(bars, cfg["horizon"], execution, cfg["log"])
    )
    return cross_sectional(labels, cfg["cross_sectional"])
