"""write_backtest's folder, the run's metrics.json block the trial ledger reads, and report.html
rendered in a real headless Chromium (every chart drew, no page error, nothing fetched), for a
backtest and for a (fake) walk-forward folder; `qfactory report --run` regenerates both."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.backtest.outputs import write_backtest
from quant_cli.cli import app
from quant_cli.data.synthetic import generate
from quant_cli.dataset.labels import forward_return
from quant_cli.runs.ledger import run_trials

CFG = {"strategy": "long_short", "quantile": 0.2, "cost_bps": 5.0, "slippage_bps": 1.0, "execution": "next_close"}
LEDGER_KEYS = ("sharpe", "segment", "periods", "periods_per_year", "skew", "kurtosis")


@pytest.fixture(scope="module")
def panel():
    bars = generate(symbols=12, bars=260, seed=3)
    labels = forward_return(bars, 1, "next_close")
    noise = np.random.default_rng(0).normal(0, 0.02, labels.height)
    scores = labels.select("symbol", "ts", (pl.col("label") * 0.5 + pl.Series(noise)).alias("score"), "label")
    return bars, scores


def fake_run(root: Path, bars: pl.DataFrame, scores: pl.DataFrame) -> Path:
    """A run directory with backtest/, model/feature_importance.json and a walkforward/ in the
    layout the walk-forward stage writes (folds.json, predictions.parquet, backtest/)."""
    run = root / "demo-20260101T000000-abcd"
    (run / "model").mkdir(parents=True)
    (run / "backtest").mkdir()
    (run / "manifest.json").write_text(
        json.dumps(
            {"run_id": run.name, "created": "2026-01-01T00:00:00+00:00", "dataset": {"name": "demo"}, "stages": {}}
        )
    )
    (run / "model" / "feature_importance.json").write_text(json.dumps({"ret_5": 12.0, "vol_20": 4.0, "rsi_14": 7.5}))
    summary = write_backtest(run / "backtest", scores, bars, CFG, extra={"segment": "test"}, run_dir=run)
    (run / "metrics.json").write_text(json.dumps({"backtest": {k: v for k, v in summary.items() if k != "config"}}))
    wf = run / "walkforward"
    (wf / "backtest").mkdir(parents=True)
    days = scores["ts"].unique().sort()
    edges = [days[i] for i in (0, 86, 172, days.len() - 1)]
    folds = [
        {
            "fold": i,
            "train_start": "2014-01-01T00:00:00+00:00",
            "train_end": edges[i].isoformat(),
            "test_start": edges[i].isoformat(),
            "test_end": edges[i + 1].isoformat(),
            "train_rows": 1000 + i,
            "test_rows": 500,
            "ic": 0.05,
            "rank_ic": 0.04,
            "sharpe": 1.1,
            "status": "ok",
        }
        for i in range(3)
    ]
    (wf / "folds.json").write_text(json.dumps({"mode": "rolling", "n_folds": 3, "folds": folds}))
    scores.with_columns(pl.lit(0).alias("fold")).select("symbol", "ts", "fold", "score", "label").write_parquet(
        wf / "predictions.parquet"
    )
    write_backtest(wf / "backtest", scores, bars, CFG, extra={"segment": "walkforward"}, run_dir=run)
    return run


def test_write_backtest_outputs_and_the_ledger_block(tmp_path, panel):
    bars, scores = panel
    run = fake_run(tmp_path, bars, scores)
    folder = run / "backtest"
    for name in ("equity.parquet", "weights.parquet", "trades.parquet", "metrics.json", "report.html", "analysis.json"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "metrics.json").read_text())
    assert all(k in summary for k in LEDGER_KEYS)
    assert summary["periods_per_year_source"] == "observed" and 250 < summary["periods_per_year"] < 265  # business days
    assert summary["ic_kind"] == "cross_sectional" and summary["before_costs"]["sharpe"] > summary["sharpe"]
    trials = run_trials(run)
    assert [t.kind for t in trials] == ["backtest"] and trials[0].sharpe == pytest.approx(summary["sharpe"])
    trades = pl.read_parquet(folder / "trades.parquet")
    assert (trades["fill_ts"] > trades["ts"]).all()  # every trade fills on a later bar than its decision


def test_periods_per_year_override_is_stated(tmp_path, panel):
    bars, scores = panel
    (tmp_path / "b").mkdir()
    summary = write_backtest(tmp_path / "b", scores, bars, CFG | {"periods_per_year": 365.0})
    assert (summary["periods_per_year"], summary["periods_per_year_source"]) == (365.0, "recipe")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, tmp_path: Path) -> tuple[str, str]:
    """(DOM after load, browser log) of a page opened from disk in headless Chromium."""
    browser = chromium()
    if browser is None:
        if os.environ.get("QFACTORY_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp_path / f"chromium-{page.parent.parent.name}-{page.parent.name}"
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=2000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def check_page(page: Path, tmp_path: Path, at_least: int) -> str:
    dom, log = render(page, tmp_path)
    drawn = re.search(r'data-charts-drawn="(\d+)"', dom)
    total = re.search(r'data-charts="(\d+)"', dom)
    assert drawn and total, "the page's load handler did not run"
    assert int(drawn.group(1)) == int(total.group(1)) >= at_least  # every chart has drawn marks
    assert re.search(r'<ul id="page-errors"></ul>', dom), re.search(r'<ul id="page-errors">.*?</ul>', dom).group(0)
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Content Security Policy" in line]
    assert not console, console
    assert not re.search(r'(src|href)="(https?:)?//', page.read_text())  # nothing to fetch: offline
    return dom


def test_report_renders_in_chromium_and_regenerates(tmp_path, panel, runner):
    bars, scores = panel
    run = fake_run(tmp_path, bars, scores)
    for page in (run / "backtest" / "report.html", run / "walkforward" / "backtest" / "report.html"):
        page.unlink()
    result = runner.invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 0, result.output
    pages = [run / "backtest" / "report.html", run / "walkforward" / "backtest" / "report.html"]
    assert result.stdout.splitlines() == [str(p) for p in pages]  # the pages' paths, for `xdg-open "$(...)"`
    as_json = json.loads(runner.invoke(app, ["report", "--run", str(run), "--json"]).stdout)
    assert as_json["path"] == str(pages[0]) and as_json["reports"] == [str(p) for p in pages]
    dom = check_page(run / "backtest" / "report.html", tmp_path, at_least=9)
    for title in (
        "Equity vs benchmark",
        "Drawdown",
        "Rolling Sharpe",
        "Monthly returns",
        "Rank IC per timestamp",
        "IC decay",
        "score decile",
        "Exposure (gross and net)",
        "Turnover (",
        "Feature importance",
    ):
        assert title in dom, title
    wf = check_page(run / "walkforward" / "backtest" / "report.html", tmp_path, at_least=9)
    assert "Walk-forward folds" in wf and "the 3 fold starts" in wf and wf.count('class="fold-tick"') == 3
    assert "Equity vs benchmark (log scale)" in wf and 'class="marker"' not in wf  # no full-height dashed lines


def test_report_of_a_run_without_a_backtest_is_one_line(tmp_path, runner):
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": "empty-run", "stages": {}}))
    result = runner.invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: run empty-run has no backtest to report; backtest it first with `qfactory backtest --run empty-run`"
    )


# ---- honest numbers (issue 18 §3) --------------------------------------------------------------------


def drift_bars(n: int = 600, drift: float = 0.002, vol: float = 0.008, seed: int = 1) -> pl.DataFrame:
    """One close-only symbol that only drifts up: no score can predict its noise."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset(np.datetime64("2015-01-02", "D"), np.arange(n), roll="forward").astype("datetime64[us]")
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, vol, n)))
    frame = pl.DataFrame({"symbol": "EURUSD", "ts": days, "close": close})
    return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def test_a_sign_book_on_a_drifting_pair_is_flagged_as_market_exposure(tmp_path):
    """A useless score (mostly positive noise) traded by `sign` on an up-drifting symbol: a high
    Sharpe ratio that is the drift. metrics.json and report.html say so, with alpha and IR."""
    bars = drift_bars()
    noise = np.random.default_rng(2).normal(0, 1, bars.height)
    scores = bars.select("symbol", "ts", pl.Series("score", np.abs(noise) - 0.1))  # ~92% positive, unrelated to returns
    (tmp_path / "b").mkdir()
    summary = write_backtest(tmp_path / "b", scores, bars, {"strategy": "sign", "execution": "next_close"})
    assert summary["sharpe"] > 2.0 and summary["net_exposure_share"] > 0.8 and summary["beta"] > 0.8
    assert summary["mostly_market"] is True and abs(summary["alpha"]) < 0.05  # the drift, not the score
    written = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert written["mostly_market"] is True and {"alpha", "information_ratio"} <= written.keys()
    page = (tmp_path / "b" / "report.html").read_text()
    assert 'id="market-exposure"' in page and "The result is mostly market exposure." in page
    assert "<td>Alpha (annual, vs the benchmark)</td>" in page and "<td>Information ratio</td>" in page
    assert f"Alpha {summary['alpha']:.2%}/yr and information ratio {summary['information_ratio']:.2f}" in page


def test_a_market_neutral_long_short_book_is_not_flagged(tmp_path, panel):
    bars, scores = panel
    (tmp_path / "b").mkdir()
    summary = write_backtest(tmp_path / "b", scores, bars, CFG)
    assert abs(summary["net_exposure"]) < 0.05 and abs(summary["beta"]) < 0.5
    assert summary["mostly_market"] is False
    assert 'id="market-exposure"' not in (tmp_path / "b" / "report.html").read_text()


def test_market_exposure_thresholds_are_the_documented_ones():
    from quant_cli.backtest.metrics import BETA_LIMIT, NET_SHARE_LIMIT, market_exposure

    assert (NET_SHARE_LIMIT, BETA_LIMIT) == (0.8, 0.5)

    def flagged(**summary: float) -> bool:
        return market_exposure({"exposure": 1.0, "net_exposure": 0.0, "beta": 0.0} | summary)["mostly_market"]

    assert flagged(net_exposure=-0.8) and flagged(beta=0.5) and flagged(beta=-0.6)
    assert not flagged(net_exposure=0.79, beta=0.49) and not flagged(exposure=0.0, net_exposure=0.0, beta=float("nan"))


def test_the_report_shows_the_deflated_sharpe_and_its_trials(tmp_path, panel):
    bars, scores = panel
    (tmp_path / "b").mkdir()
    summary = write_backtest(
        tmp_path / "b", scores, bars, CFG, deflate=lambda s: {"deflated_sharpe": 0.4321, "n_trials": 7}
    )
    assert (summary["deflated_sharpe"], summary["n_trials"]) == (0.4321, 7)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["n_trials"] == 7
    page = (tmp_path / "b" / "report.html").read_text()
    assert re.search(
        r"<td>Deflated Sharpe <span[^>]*>over 7 trials on this dataset when the run was made</span></td>"
        r"<td>0\.432</td>",
        page,
    )


def test_equity_is_drawn_on_a_log_axis_and_folds_as_short_light_ticks():
    """A benchmark that grows 240x: on a log axis 1, 10 and 100 are equally spaced (on a linear one
    the strategy would be a flat line); fold starts are short marks on the time axis."""
    from quant_cli.backtest import charts

    x = np.arange(1000) * 86400.0
    benchmark = {"benchmark": np.exp(np.linspace(0, np.log(240), 1000))}
    svg = charts.line_chart("equity", x, benchmark, ticks=[x[100], x[500]], log=True)
    labels = re.findall(r'<text x="\d+" y="([\d.]+)" text-anchor="end">([^<]+)</text>', svg)
    y = {label: float(pos) for pos, label in labels}
    assert {"1", "10", "100"} <= y.keys()
    assert y["1"] - y["10"] == pytest.approx(y["10"] - y["100"], abs=0.2)
    marks = re.findall(r'<line x1="[\d.]+" x2="[\d.]+" y1="([\d.]+)" y2="([\d.]+)" class="fold-tick"/>', svg)
    assert len(marks) == 2 and all(float(b) - float(a) <= 10 for a, b in marks)  # short, not full height
    linear = charts.line_chart("equity", x, benchmark)
    assert "fold-tick" not in linear and ">100.00<" in linear


def test_exposure_is_never_hidden_behind_turnover_or_net_exposure(tmp_path, panel):
    """Gross exposure is an area under the net line, turnover a chart of its own."""
    bars, scores = panel
    (tmp_path / "b").mkdir()
    write_backtest(tmp_path / "b", scores, bars, CFG)
    page = (tmp_path / "b" / "report.html").read_text()
    exposure = re.search(r'<svg[^>]*aria-label="Exposure \(gross and net\)".*?</svg>', page).group(0)
    assert exposure.count("<polygon") == 1 and exposure.count("<polyline") == 1 and "turnover" not in exposure
    assert re.search(r'aria-label="Turnover \(\d+-period mean', page)
