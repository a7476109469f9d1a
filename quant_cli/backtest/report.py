"""report.html: a self-contained tear sheet of one backtest folder (inline CSS and SVG, no network).

Rendered from files alone — the folder's equity.parquet, metrics.json and analysis.json, the run's
model/feature_importance.json, and for walk-forward the sibling folds.json — so `qfactory report`
can regenerate it without the data store. A Content-Security-Policy forbids every network fetch,
and a tiny inline script records page errors into #page-errors (what the browser test reads).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest import charts
from quant_cli.backtest.metrics import drawdown_series, rolling_sharpe
from quant_cli.io import STAGING_PREFIX, read_json, write_text_atomic

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HEADLINE = (
    ("total_return", "Total return", ".2%"),
    ("annual_return", "Annual return", ".2%"),
    ("annual_volatility", "Annual volatility", ".2%"),
    ("sharpe", "Sharpe", ".2f"),
    ("alpha", "Alpha (annual, vs the benchmark)", ".2%"),
    ("information_ratio", "Information ratio", ".2f"),
    ("deflated_sharpe", "Deflated Sharpe", ".3f"),
    ("sortino", "Sortino", ".2f"),
    ("max_drawdown", "Max drawdown", ".2%"),
)
DETAIL = (
    ("calmar", ".2f"),
    ("max_drawdown_periods", "d"),
    ("hit_rate", ".1%"),
    ("profit_factor", ".2f"),
    ("omega", ".2f"),
    ("tail_ratio", ".2f"),
    ("var_95", ".2%"),
    ("cvar_95", ".2%"),
    ("skew", ".2f"),
    ("kurtosis", ".2f"),
    ("psr", ".3f"),
    ("mean_turnover", ".3f"),
    ("annual_turnover", ".1f"),
    ("avg_holding_periods", ".1f"),
    ("exposure", ".2f"),
    ("net_exposure", ".2f"),
    ("total_cost", ".2%"),
    ("beta", ".2f"),
    ("alpha", ".2%"),
    ("information_ratio", ".2f"),
    ("ic", ".4f"),
    ("rank_ic", ".4f"),
    ("icir", ".3f"),
    ("ic_kind", "s"),
    ("periods", "d"),
    ("periods_per_year", ".1f"),
    ("periods_per_year_source", "s"),
)
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #e5e5e5;text-align:right}th:first-child,td:first-child{text-align:left}
figure{margin:12px 0}svg{width:100%;height:auto;font-size:11px;fill:#333}svg .title{font-size:13px;font-weight:600}
svg .grid{stroke:#eee}svg .fold-tick{stroke:#bbb}.note{color:#666}#page-errors:empty{display:none}
.warning{background:#fff4e5;border-left:4px solid #d9822b;padding:8px 12px}"""
GUARD = """<script>(function(){
var box=function(m){var e=document.getElementById('page-errors');
if(e){var li=document.createElement('li');li.textContent=m;e.appendChild(li);}};
window.addEventListener('error',function(e){box('error: '+e.message);});
document.addEventListener('securitypolicyviolation',function(e){box('blocked: '+e.blockedURI);});
window.addEventListener('load',function(){var n=0;
document.querySelectorAll('figure.chart svg').forEach(function(s){if(s.querySelector('polyline,rect,polygon'))n++;});
document.body.setAttribute('data-charts-drawn',n);
document.body.setAttribute('data-charts',document.querySelectorAll('figure.chart').length);});})();</script>"""


def write_report(folder: Path, run_dir: Path) -> Path:
    """Render `folder`/report.html; returns its path."""
    folder = Path(folder)
    path = folder / "report.html"
    write_text_atomic(path, render(folder, Path(run_dir)))
    return path


def render_run_reports(run_dir: Path) -> list[Path]:
    """Regenerate the report of every backtest folder a run has (backtest/, walkforward/backtest/)."""
    folders = [Path(run_dir) / "backtest", Path(run_dir) / "walkforward" / "backtest"]
    return [
        write_report(f, Path(run_dir))
        for f in folders
        if (f / "equity.parquet").is_file() and (f / "metrics.json").is_file()
    ]


def render(folder: Path, run_dir: Path) -> str:
    curve = pl.read_parquet(folder / "equity.parquet")
    summary = read_json(folder / "metrics.json")
    analysis = read_json(folder / "analysis.json") if (folder / "analysis.json").is_file() else {}
    folds = _folds(folder)
    parts = [
        _header(summary, run_dir, bool(folds)),
        _market_warning(summary),
        _tables(summary),
        _regime_table(summary),
        *_performance(curve, summary, folds),
        *_signal(analysis, summary),
    ]
    if (importance := _importance(run_dir)) is not None:
        parts.append(importance)
    if (audit := _audit(run_dir)) is not None:
        parts.append(audit)
    if folds:
        parts.append(_fold_table(folds))
    title = f"qfactory backtest — {html.escape(_run_name(run_dir))}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta http-equiv="Content-Security-Policy" content="default-src '
        "'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f'<style>{STYLE}</style>{GUARD}</head><body><ul id="page-errors"></ul>{"".join(parts)}</body></html>'
    )


def _run_name(run_dir: Path) -> str:
    """The run id, also while the run is still being built in its staging folder."""
    return run_dir.name.removeprefix(STAGING_PREFIX)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if spec == "s":
        return html.escape(str(value))
    try:
        return format(int(value) if spec == "d" else float(value), spec)
    except (TypeError, ValueError):
        return html.escape(str(value))


def _header(summary: dict[str, Any], run_dir: Path, walkforward: bool) -> str:
    cfg = summary.get("config", {})
    facts = [
        f"strategy <b>{html.escape(str(cfg.get('strategy', summary.get('signal'))))}</b>",
        f"execution {html.escape(str(cfg.get('execution')))}",
        f"{summary.get('start', '')[:10]} → {summary.get('end', '')[:10]}",
        f"{summary.get('periods', 0)} periods, "
        f"{_fmt(summary.get('periods_per_year'), '.1f')} per year "
        f"({html.escape(str(summary.get('periods_per_year_source')))})",
    ]
    if "segment" in summary:
        facts.append(f"segment {html.escape(str(summary['segment']))}")
    costs = (
        f"costs: {cfg.get('cost_bps', 0)} bps commission, "
        f"{cfg.get('slippage_bps', 0)} bps slippage, min "
        f"{cfg.get('min_trade_cost', 0)}, borrow {cfg.get('borrow_bps', 0)} bps/yr"
    )
    kind = "Walk-forward backtest (stitched out-of-sample scores)" if walkforward else "Backtest"
    return (
        f"<h1>{kind} — "
        f"{html.escape(_run_name(run_dir))}</h1><p>{' · '.join(facts)}<br><span "
        f'class="note">{html.escape(costs)}</span></p>'
    )


def _market_warning(summary: dict[str, Any]) -> str:
    """A banner when the result is mostly market exposure (metrics.market_exposure thresholds)."""
    if not summary.get("mostly_market"):
        return ""
    market = html.escape(str(summary.get("market") or "the equal-weight universe"))
    return (
        f'<p class="warning" id="market-exposure"><b>The result is mostly market exposure.</b> Net exposure '
        f"{_fmt(summary.get('net_exposure'), '.2f')} of gross {_fmt(summary.get('exposure'), '.2f')}, beta "
        f"{_fmt(summary.get('beta'), '.2f')} to {market}: the Sharpe ratio of "
        f"{_fmt(summary.get('sharpe'), '.2f')} mostly "
        f"measures the market's drift. Alpha {_fmt(summary.get('alpha'), '.2%')}/yr and information ratio "
        f"{_fmt(summary.get('information_ratio'), '.2f')} say what the signal added.</p>"
    )


def _tables(summary: dict[str, Any]) -> str:
    before = summary.get("before_costs", {})
    rows = "".join(
        f"<tr><td>{label}{_trials(summary) if k == 'deflated_sharpe' else ''}</td>"
        f"<td>{_fmt(summary.get(k), spec)}</td><td>{_fmt(before.get(k), spec)}</td></tr>"
        for k, label, spec in HEADLINE
    )
    detail = "".join(
        f"<tr><td>{k}</td><td>{_fmt(summary.get(k), spec)}</td></tr>" for k, spec in DETAIL if k in summary
    )
    return (
        f"<h2>Summary</h2><table><tr><th></th><th>after costs</th><th>before costs</th></tr>{rows}</table>"
        f"<h2>All metrics</h2><table>{detail}</table>"
    )


def _regime_table(summary: dict[str, Any]) -> str:
    """Results per market volatility regime (backtest/regimes.py); empty for older metrics.json files."""
    regimes = summary.get("by_regime") or {}
    if not regimes:
        return ""
    columns = (
        ("share", "share of time", ".1%"),
        ("periods", "periods", "d"),
        ("total_return", "total return", ".2%"),
        ("mean_return", "mean return", ".3%"),
        ("sharpe", "Sharpe", ".2f"),
        ("hit_rate", "hit rate", ".1%"),
    )
    cells = ["".join(f"<td>{_fmt(m.get(k), spec)}</td>" for k, _, spec in columns) for m in regimes.values()]
    rows = "".join(f"<tr><td>{html.escape(name)}</td>{row}</tr>" for name, row in zip(regimes, cells))
    head = "<tr><th>regime</th>" + "".join(f"<th>{label}</th>" for _, label, _ in columns) + "</tr>"
    note = (
        '<p class="note">The equal-weight market\'s 20-bar volatility, ranked in its trailing year, in terciles; '
        "known at each decision's close.</p>"
    )
    return f"<h2>By market regime</h2>{note}<table>{head}{rows}</table>"


def _trials(summary: dict[str, Any]) -> str:
    """What the deflated Sharpe ratio was deflated by, or why there is none."""
    n = summary.get("n_trials")
    if isinstance(n, int) and n > 0:
        trials = f"{n} trial{'s' if n != 1 else ''}"
        return f' <span class="note" id="n-trials">over {trials} on this dataset when the run was made</span>'
    return ' <span class="note" id="n-trials">(not a test-segment trial)</span>'


def _figure(svg: str) -> str:
    return f'<figure class="chart">{svg}</figure>'


def _epoch(ts: pl.Series) -> np.ndarray:
    return ts.dt.epoch("us").to_numpy() / 1e6


def _performance(curve: pl.DataFrame, summary: dict[str, Any], folds: list[dict[str, Any]]) -> list[str]:
    if curve.height < 2:
        return ['<p class="note">Too few periods to chart.</p>']
    x = _epoch(curve["ts"])
    markers = [_iso_epoch(f["test_start"]) for f in folds if f.get("test_start")]
    equity = {
        "after costs": curve["equity"].to_numpy(),
        "before costs": curve["equity_before_costs"].to_numpy(),
        "benchmark": curve["benchmark_equity"].to_numpy(),
    }
    net = curve["net"].to_numpy()
    ppy = float(summary.get("periods_per_year") or 252)
    window = int(min(max(round(ppy / 4), 10), max(curve.height // 3, 2)))
    ticks = f'<p class="note">Ticks on the time axis: the {len(markers)} fold starts.</p>' if markers else ""
    out = [
        "<h2>Performance</h2>",
        _figure(charts.line_chart("Equity vs benchmark (log scale)", x, equity, ".2f", ticks=markers, log=True))
        + ticks,
        _figure(
            charts.line_chart(
                "Drawdown", x, {"drawdown": drawdown_series(curve["equity"].to_numpy())}, ".1%", fill=True
            )
        ),
        _figure(
            charts.line_chart(
                f"Rolling Sharpe ({window} periods, annualised)",
                x,
                {"rolling Sharpe": rolling_sharpe(net, window, ppy)},
                ".1f",
            )
        ),
    ]
    out.append(_monthly(curve))
    # Exposure and turnover on separate axes: a flip trades twice the book, and per-period turnover
    # spikes drawn over the exposure lines hid them; turnover is shown as its rolling mean.
    exposure = {"gross exposure": curve["exposure"].to_numpy(), "net exposure": curve["net_exposure"].to_numpy()}
    out.append(_figure(charts.line_chart("Exposure (gross and net)", x, exposure, ".2f", areas=("gross exposure",))))
    turnover = _rolling_mean(curve["turnover"].to_numpy(), window)
    out.append(
        _figure(
            charts.line_chart(
                f"Turnover ({window}-period mean, share of equity traded per period)",
                x,
                {"turnover": turnover},
                ".2f",
                fill=True,
            )
        )
    )
    return out


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` periods (over fewer at the start)."""
    sums = np.cumsum(np.nan_to_num(values))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return (sums - np.concatenate([np.zeros(window), sums[:-window]])[: values.size]) / counts


def _iso_epoch(text: str) -> float:
    return pl.Series([text]).str.to_datetime(time_zone="UTC").dt.epoch("us").to_numpy()[0] / 1e6


def _monthly(curve: pl.DataFrame) -> str:
    monthly = curve.group_by(pl.col("ts").dt.year().alias("year"), pl.col("ts").dt.month().alias("month")).agg(
        ((1.0 + pl.col("net")).product() - 1.0).alias("ret")
    )
    years = sorted(monthly["year"].unique().to_list())
    grid = np.full((len(years), 12), np.nan)
    for year, month, ret in monthly.iter_rows():
        grid[years.index(year), month - 1] = ret
    return _figure(charts.heatmap("Monthly returns (after costs)", [str(y) for y in years], MONTHS, grid))


def _signal(analysis: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    out = []
    series = analysis.get("ic_series") or []
    if len(series) >= 2:
        x = np.array([_iso_epoch(p["ts"]) for p in series])
        rank = np.array([np.nan if p["rank_ic"] is None else p["rank_ic"] for p in series], dtype=float)
        window = max(min(20, len(series) // 3), 2)
        smooth = np.convolve(np.nan_to_num(rank), np.ones(window) / window, mode="full")[: rank.size]
        smooth[: window - 1] = np.nan
        out.append(
            _figure(
                charts.line_chart("Rank IC per timestamp", x, {"rank IC": rank, f"{window}-period mean": smooth}, ".2f")
            )
        )
    elif "ic_kind" in summary:
        out.append(
            '<p class="note">IC over time: fewer than 5 scored symbols per '
            "timestamp, so no cross-sectional IC; pooled IC "
            f"{_fmt(summary.get('ic'), '.4f')}.</p>"
        )
    if decay := analysis.get("ic_decay"):
        out.append(
            _figure(
                charts.bar_chart(
                    f"IC decay: rank IC vs forward return over h bars ({decay[0]['kind']})",
                    [f"h={d['horizon']}" for d in decay],
                    [d["rank_ic"] for d in decay],
                    ".3f",
                )
            )
        )
    if deciles := analysis.get("deciles"):
        values = [None if d["mean_return"] is None else d["mean_return"] * 1e4 for d in deciles]
        out.append(
            _figure(
                charts.bar_chart(
                    "Mean next-period return by score decile (bps)", [f"D{d['decile']}" for d in deciles], values, ".1f"
                )
            )
        )
    return (["<h2>Signal</h2>"] + out) if out else []


def _importance(run_dir: Path) -> str | None:
    path = run_dir / "model" / "feature_importance.json"
    if not path.is_file():
        return None
    try:
        values = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or not values:
        return None
    top = sorted(((str(k), float(v)) for k, v in values.items() if isinstance(v, (int, float))), key=lambda kv: -kv[1])[
        :20
    ]
    return (
        "<h2>Model</h2>"
        + _figure(charts.hbar_chart("Feature importance (top 20)", [k for k, _ in top], [v for _, v in top]))
        if top
        else None
    )


def _audit(run_dir: Path) -> str | None:
    """The section of `qfactory audit` (audit/audit.json): the verdict, each look-ahead check, the luck figures."""
    path = run_dir / "audit" / "audit.json"
    try:
        report = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    try:
        return _audit_section(report)
    except (KeyError, TypeError, AttributeError):  # not an audit.json this version wrote: no section, no crash
        return None


def _audit_section(report: dict[str, Any]) -> str:
    checks = [*report["scoring"]["checks"], *report["training"]["checks"]]
    rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{'pass' if c['passed'] else 'FAIL'}"
        f"{'' if c.get('decides', True) else ' (not decisive)'}</td><td>{_fmt(c.get('rows'), 'd')}</td>"
        f"<td>{html.escape(str(c.get('first') or ''))}</td></tr>"
        for c in checks
    )
    luck, verdict = report["luck"], html.escape(report["failure"] or "every look-ahead check passed")
    dsr = luck.get("deflated_sharpe") or {}
    figures = [
        f"{luck.get('permutations', 0)} permutation(s)"
        + (f" (fewer than the default {luck['default_permutations']})" if luck.get("reduced") else ""),
        f"test IC {_fmt(luck.get('observed_test_ic'), '.4f')} vs null mean {_fmt(luck.get('null_mean'), '.4f')}",
        f"p-value {_fmt(luck.get('p_value'), '.3f')}",
        f"deflated Sharpe {_fmt(dsr.get('deflated_sharpe'), '.3f')} over {_fmt(dsr.get('n_trials'), 'd')} trial(s)"
        if dsr.get("available")
        else html.escape(str(dsr.get("why", "no deflated Sharpe"))),
    ]
    return (
        f'<h2 id="audit">Audit ({html.escape(report["verdict"])})</h2><p>{verdict}</p>'
        f"<table><tr><th>check</th><th>result</th><th>rows</th><th>first moved</th></tr>{rows}</table>"
        f"<p>Luck: {' · '.join(figures)}</p>"
    )


def _folds(folder: Path) -> list[dict[str, Any]]:
    path = folder.parent / "folds.json"
    if not path.is_file():
        return []
    try:
        folds = read_json(path).get("folds", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in folds if isinstance(f, dict)]


def _fold_table(folds: list[dict[str, Any]]) -> str:
    columns = (
        ("fold", "d"),
        ("train_start", "date"),
        ("train_end", "date"),
        ("test_start", "date"),
        ("test_end", "date"),
        ("train_rows", "d"),
        ("test_rows", "d"),
        ("ic", ".4f"),
        ("rank_ic", ".4f"),
        ("sharpe", ".2f"),
        ("status", "s"),
    )
    head = "".join(f"<th>{name}</th>" for name, _ in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(f.get(k, ''))[:10]) if spec == 'date' else _fmt(f.get(k), spec)}</td>"
            for k, spec in columns
        )
        + "</tr>"
        for f in folds
    )
    return f"<h2>Walk-forward folds</h2><table><tr>{head}</tr>{body}</table>"
