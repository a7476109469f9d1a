"""One entry point that runs the engine and writes a backtest folder; the backtest stage and
walk-forward (`walkforward/backtest/`) both call `write_backtest`.

The folder holds equity.parquet (per-period curve), weights.parquet (target and held weight per
symbol and timestamp), trades.parquet, analysis.json (signal diagnostics for the report),
metrics.json (the summary) and report.html. The summary carries what the trial ledger reads:
sharpe (annualised), periods, periods_per_year, skew, raw kurtosis, and `segment` via `extra`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.backtest import strategies
from quant_cli.backtest.analysis import signal_analysis
from quant_cli.backtest.engine import run_backtest, with_defaults
from quant_cli.data.frequency import observed_periods_per_year
from quant_cli.data.frequency import periods_per_year as nominal_periods_per_year
from quant_cli.errors import DataError
from quant_cli.io import write_json_atomic, write_parquet_atomic
from quant_cli.report import SILENT, Reporter

CONFIG_KEYS = (
    "strategy",
    "quantile",
    "top_k",
    "top_k_short",
    "n_drop",
    "threshold",
    "sizing",
    "vol_window",
    "vol_target",
    "max_gross",
    "max_net",
    "max_weight",
    "rebalance_every",
    "rebalance",
    "cost_bps",
    "slippage_bps",
    "min_trade_cost",
    "capital",
    "borrow_bps",
    "execution",
    "benchmark",
)


WEIGHT_COLUMNS = ("symbol", "ts", "weight")


def read_weights(path: Path) -> pl.DataFrame:
    """symbol, ts (UTC), weight from a parquet or CSV file; one DataError line when it cannot be used."""
    path = Path(path)
    try:
        frame = (
            pl.read_parquet(path)
            if path.suffix.lower() in (".parquet", ".pq")
            else pl.read_csv(path, try_parse_dates=True)
        )
    except FileNotFoundError:
        raise DataError(
            f"--weights {path}: no such file; pass a parquet or CSV file with columns symbol, ts, weight"
        ) from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"--weights {path}: not a readable parquet or CSV file "
            f"({str(exc).splitlines()[0][:200]}); pass one with columns symbol, ts, weight"
        ) from None
    missing = [c for c in WEIGHT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"--weights {path}: missing column(s) {', '.join(missing)} (has "
            f"{', '.join(frame.columns[:10])}); it needs symbol, ts, weight"
        )
    try:
        ts = frame["ts"]
        if ts.dtype == pl.String or ts.dtype == pl.Date:
            ts = ts.cast(pl.String).str.to_datetime(time_zone="UTC")
        ts = ts.dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else ts.dt.convert_time_zone("UTC")  # type: ignore[union-attr]
        out = frame.select(
            pl.col("symbol").cast(pl.String), ts.dt.cast_time_unit("us").alias("ts"), pl.col("weight").cast(pl.Float64)
        )
    except (pl.exceptions.PolarsError, AttributeError) as exc:
        raise DataError(
            f"--weights {path}: ts must be timestamps and weight numbers ({str(exc).splitlines()[0][:200]})"
        ) from None
    if out.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        raise DataError(
            f"--weights {path}: more than one row for some (symbol, ts); give one weight per symbol and timestamp"
        )
    if not out["weight"].is_finite().fill_null(False).all():
        raise DataError(
            f"--weights {path}: weight has null, NaN or infinite values; give a finite weight on every row (0 for flat)"
        )
    return out


def resolve_periods_per_year(cfg: dict[str, Any], bars: pl.DataFrame, frequency: str | None) -> tuple[float, str]:
    """(periods per year, where it came from): [backtest] periods_per_year when set ("recipe"),
    else the bars actually observed per year in the data ("observed"), else the nominal count
    for the frequency ("frequency", for data spanning under four weeks)."""
    if cfg.get("periods_per_year"):
        return float(cfg["periods_per_year"]), "recipe"
    observed = observed_periods_per_year(bars["ts"]) if bars.height else None
    if observed:
        return observed, "observed"
    return nominal_periods_per_year(frequency), "frequency"


def write_backtest(
    folder: Path,
    signal: pl.DataFrame,
    bars: pl.DataFrame,
    cfg: dict[str, Any],
    periods_per_year: float | None = None,
    extra: dict[str, Any] | None = None,
    kind: str = "score",
    frequency: str | None = None,
    run_dir: Path | None = None,
    reporter: Reporter = SILENT,
    deflate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Backtest `signal` (symbol, ts, score [, label] — or weight with kind="weight") on `bars`
    and write the folder (which must exist and be empty, e.g. a stage_outputs staging folder).
    Rows are joined by (symbol, ts), so unscored rows (a sequence model's warm-up) simply trade
    nothing. `extra` is merged into the summary (e.g. segment, fold count). `run_dir` is where
    the report looks for model/feature_importance.json (default: the folder's parent).
    `deflate(summary)` returns deflated_sharpe and n_trials (runs/ledger.py) to merge into the
    summary before it is written, so metrics.json and report.html carry them.
    A score signal whose strategy cannot trade its universe is refused first (check_universe).
    Returns the summary written to metrics.json."""
    if signal.height == 0:
        raise DataError(f"nothing to backtest: the {kind}s are empty; check the segment or the --weights file")
    cfg = with_defaults(cfg)
    if kind == "score":
        strategies.check_universe(cfg, *strategies.universe_of(signal))
    notice = strategies.holding_notice(cfg, signal["symbol"].n_unique()) if kind == "score" else None
    if notice:
        reporter.notice(notice)
    if periods_per_year is None:
        ppy, source = resolve_periods_per_year(cfg, bars, frequency)
    else:
        ppy, source = float(periods_per_year), "caller"
    result = run_backtest(signal, bars, cfg, ppy, kind=kind)
    market = f"benchmark {cfg['benchmark']}" if cfg["benchmark"] else "the equal-weight universe"
    summary = {**result.summary, "periods_per_year_source": source, "signal": kind, "market": market, **(extra or {})}
    if deflate is not None:  # before metrics.json and the report are written: both show it
        summary.update(deflate(summary))
    summary["config"] = {k: cfg[k] for k in CONFIG_KEYS}
    folder = Path(folder)
    write_parquet_atomic(folder / "equity.parquet", result.curve)
    write_parquet_atomic(folder / "weights.parquet", result.weights)
    write_parquet_atomic(folder / "trades.parquet", result.trades)
    analysis = signal_analysis(signal, bars, cfg["execution"]) if kind == "score" else {}
    write_json_atomic(folder / "analysis.json", analysis)
    write_json_atomic(folder / "metrics.json", summary)
    from quant_cli.backtest.report import write_report

    write_report(folder, run_dir or folder.parent)
    return summary
