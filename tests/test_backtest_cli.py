"""`qfactory backtest` through the CLI: a trained run's backtest block (what the trial ledger
reads), `--weights FILE --recipe R` as a new run, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_cli.cli import app
from quant_cli.runs.ledger import run_trials

RECIPE = """
[run]
name = "bt"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 8
bars = 300
[model]
name = "linear"
[train]
threads = 1
[backtest]
strategy = "top_k"
top_k = 2
top_k_short = true
n_drop = 1
rebalance = "W-FRI"
slippage_bps = 2.0
borrow_bps = 50.0
"""
LEDGER_KEYS = ("sharpe", "segment", "periods", "periods_per_year", "skew", "kurtosis")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One run (ingest → split → train → backtest) shared by the tests here."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("bt-cli")
    recipe = root / "bt.toml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(
        app,
        ["run", "--recipe", str(recipe), "--quiet", "--data-dir", str(root / "data"), "--runs-dir", str(root / "runs")],
    )
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip()), recipe


def test_a_run_carries_the_backtest_block_the_ledger_reads(trained):
    run, _ = trained
    block = json.loads((run / "metrics.json").read_text())["backtest"]
    assert all(k in block for k in LEDGER_KEYS) and block["segment"] == "test"
    assert block["periods_per_year_source"] == "observed" and "before_costs" in block
    assert {"val", "test"} <= json.loads((run / "metrics.json").read_text()).keys()  # existing keys kept
    assert [t.kind for t in run_trials(run)] == ["backtest"]
    assert block["n_trials"] == 1 and 0.0 <= block["deflated_sharpe"] <= 1.0  # the only trial on its dataset
    weights = pl.read_parquet(run / "backtest" / "weights.parquet")
    assert weights["target"].abs().max() == pytest.approx(0.25)
    page = (run / "backtest" / "report.html").read_text()
    assert f"— {run.name}</h1>" in page and ".staging-" not in page  # written while the run was still staged


def test_weights_file_is_backtested_as_a_new_run(trained, tmp_path, runner):
    run, recipe = trained
    predictions = pl.read_parquet(run / "predictions.parquet").filter(pl.col("segment") == "test")
    file = tmp_path / "w.csv"
    predictions.select("symbol", "ts", (pl.col("score").sign() * 0.1).alias("weight")).write_csv(file)
    data, runs = run.parent.parent / "data", run.parent
    result = runner.invoke(
        app,
        [
            "backtest",
            "--weights",
            str(file),
            "--recipe",
            str(recipe),
            "--data-dir",
            str(data),
            "--runs-dir",
            str(runs),
            "--json",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["backtest"]["signal"] == "weight" and out["backtest"]["segment"] == "weights"
    assert run_trials(Path(out["path"])) == []  # given weights are not a model trial


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["backtest"],
            "error: backtest: pass either --run RUN (a trained run), or --weights FILE --recipe R (a new run)",
        ),
        (
            ["backtest", "--weights", "w.csv"],
            "error: backtest: pass either --run RUN (a trained run), or --weights FILE --recipe R (a new run)",
        ),
        (
            ["backtest", "--run", "latest", "--weights", "w.csv"],
            "error: backtest: pass either --run RUN (a trained run), or --weights FILE --recipe R (a new run)",
        ),
    ],
)
def test_backtest_needs_one_source(runner, args, line):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.strip() == line


@pytest.mark.parametrize(
    "content, line",
    [
        ("symbol,ts\nA,2020-01-01\n", "missing column(s) weight (has symbol, ts); it needs symbol, ts, weight"),
        (
            "symbol,ts,weight\nA,2020-01-01,0.1\nA,2020-01-01,0.2\n",
            "more than one row for some (symbol, ts); give one weight per symbol and timestamp",
        ),
        (
            "symbol,ts,weight\nA,2020-01-01,\n",
            "weight has null, NaN or infinite values; give a finite weight on every row (0 for flat)",
        ),
    ],
)
def test_a_bad_weights_file_is_one_line(trained, tmp_path, runner, content, line):
    _, recipe = trained
    file = tmp_path / "w.csv"
    file.write_text(content)
    before = sorted(p.name for p in (tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
    result = runner.invoke(app, ["backtest", "--weights", str(file), "--recipe", str(recipe)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --weights {file}: {line}"
    after = sorted(p.name for p in (tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
    assert before == after  # no run directory, not even a half-written one


def test_a_missing_weights_file_is_one_line(trained, runner, tmp_path):
    _, recipe = trained
    result = runner.invoke(app, ["backtest", "--weights", str(tmp_path / "nope.parquet"), "--recipe", str(recipe)])
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: --weights {tmp_path / 'nope.parquet'}: no such file; pass a "
        "parquet or CSV file with columns symbol, ts, weight"
    )


WEIGHTS_RECIPE = """
[run]
name = "audit"
seed = 1
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 4
bars = 400
[model]
name = "linear"
[train]
threads = 1
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    """A recipe and its ingested dataset; returns (recipe path, the dataset's bars)."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("audit")
    (root / "r.toml").write_text(WEIGHTS_RECIPE)
    result = CliRunner().invoke(
        app, ["ingest", "--recipe", str(root / "r.toml"), "--quiet", "--data-dir", str(root / "data")]
    )
    assert result.exit_code == 0, result.output
    return root, pl.read_delta(str(root / "data" / "syn" / "bars"))


def _weights(bars: pl.DataFrame, symbols: list[str] | None = None, shift_days: int = 0) -> pl.DataFrame:
    last = bars["ts"].unique().sort()[-30:]
    syms = symbols or bars["symbol"].unique().sort().to_list()
    frame = pl.DataFrame({"ts": last}).join(pl.DataFrame({"symbol": syms}), how="cross")
    return frame.select("symbol", pl.col("ts").dt.offset_by(f"{shift_days}d"), pl.lit(0.1).alias("weight"))


def _backtest(runner, home, frame: pl.DataFrame, tmp_path: Path):
    root, _ = home
    file = tmp_path / "w.parquet"
    frame.write_parquet(file)
    runs = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--weights",
            str(file),
            "--recipe",
            str(root / "r.toml"),
            "--data-dir",
            str(root / "data"),
            "--runs-dir",
            str(runs),
        ],
    )
    return result, file, runs


def test_weights_after_the_last_bar_are_one_line_and_leave_no_run(runner, home, tmp_path):
    """Was exit 1 'unexpected failure: TypeError' with a committed, empty backtest run left behind."""
    result, file, runs = _backtest(runner, home, _weights(home[1], shift_days=3000), tmp_path)
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip().splitlines()[-1].startswith("error: nothing to backtest: no weight has a bar to trade on")
    )
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_weights_naming_symbols_the_dataset_lacks_are_refused(runner, home, tmp_path):
    """Was exit 0: phantom positions in unknown symbols took gross exposure and paid costs."""
    bars = home[1]
    frame = pl.concat([_weights(bars), _weights(bars, symbols=["NOPE1", "NOPE2"])])
    result, file, _ = _backtest(runner, home, frame, tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: weights name 2 symbol(s) with no bars in the dataset (NOPE1, "
        "NOPE2); drop those rows or ingest the symbols"
    )


def test_a_finished_weights_backtest_run_is_listed_ok(runner, home, tmp_path):
    """Was state 'interrupted' / interrupted ['train']: metrics.json, which backtest and walkforward
    also write, counted as a train leftover, so every walk-forward and weights run looked killed."""
    import json

    result, _, runs = _backtest(runner, home, _weights(home[1]), tmp_path)
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["runs", "ls", "--json", "--runs-dir", str(runs)])
    row = json.loads(listed.stdout)[0]
    assert (row["state"], row["interrupted"], row["committed"]) == ("ok", [], ["backtest"])


# ---- honest numbers (issue 18 §3) --------------------------------------------------------------------

ONE_SYMBOL = """
[run]
name = "one"
seed = 1
[data]
dataset = "one"
source = "SOURCE"
[model]
name = "linear"
[train]
threads = 1
"""
REFUSAL = (
    "error: backtest.strategy = 'long_short' needs at least 2 symbols scored at one timestamp, "
    "but the universe has 1 (EURUSD), so it would never hold a position; "
    "use a strategy that trades one symbol: 'sign', 'long_only', "
    "'threshold' (e.g. --set backtest.strategy=sign), or add symbols to the dataset"
)


def drifting_pair(tmp_path: Path, n: int = 400) -> Path:
    """EURUSD closes that drift up by 0.3% a bar with 0.4% noise: nothing to predict but the drift."""
    rng = np.random.default_rng(5)
    days = np.busday_offset(np.datetime64("2016-01-04", "D"), np.arange(n), roll="forward").astype("datetime64[us]")
    close = 1.1 * np.exp(np.cumsum(0.003 + rng.normal(0, 0.004, n)))
    path = tmp_path / "eurusd.csv"
    pl.DataFrame({"symbol": "EURUSD", "ts": days, "close": close}).write_csv(path)
    return path


def one_symbol_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "one.toml"
    recipe.write_text(ONE_SYMBOL.replace("SOURCE", str(drifting_pair(tmp_path))))
    return recipe


def test_a_long_short_run_on_one_symbol_is_refused_before_a_run_exists(runner, tmp_path):
    result = runner.invoke(app, ["run", "--recipe", str(one_symbol_recipe(tmp_path))])
    assert result.exit_code == 2 and result.stderr.splitlines() == [REFUSAL]
    assert not [p for p in (tmp_path / "runs").glob("*") if not p.name.startswith(".")]  # no run directory


def test_backtest_of_a_trained_one_symbol_run_is_refused_and_sign_shows_market_exposure(runner, tmp_path):
    """`backtest --run` refuses long_short at its start (the stage is not even begun); `sign` on the
    drifting pair trades, and its summary line says the result is mostly market exposure."""
    recipe = one_symbol_recipe(tmp_path)
    assert runner.invoke(app, ["ingest", "--recipe", str(recipe), "--quiet"]).exit_code == 0
    trained = runner.invoke(app, ["train", "--recipe", str(recipe), "--quiet"])
    assert trained.exit_code == 0, trained.output
    run = Path(trained.stdout.strip())
    refused = runner.invoke(app, ["backtest", "--run", str(run)])
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [REFUSAL]
    assert "backtest" not in json.loads((run / "manifest.json").read_text())["stages"]
    signed = runner.invoke(app, ["run", "--recipe", str(recipe), "--set", "backtest.strategy=sign"])
    assert signed.exit_code == 0, signed.output
    block = json.loads((Path(signed.stdout.strip()) / "metrics.json").read_text())["backtest"]
    assert np.isfinite(block["sharpe"]) and block["mostly_market"] is True
    line = next(line for line in signed.stderr.splitlines() if line.startswith("backtest: sharpe"))
    assert f"mostly market exposure (net exposure {block['net_exposure']:.2f} of gross {block['exposure']:.2f}" in line
    assert f"alpha {block['alpha']:.2%}/yr, information ratio {block['information_ratio']:.2f}" in line


def test_an_identical_rerun_is_not_another_trial_and_the_report_shows_n(trained, tmp_path, runner):
    """The same recipe on the same data with the same code is one trial, however often it runs;
    a changed recipe is a new one. report.html shows the deflated Sharpe ratio and its N."""
    run, recipe = trained
    root = run.parent.parent
    homes = ["--data-dir", str(root / "data"), "--runs-dir", str(root / "runs"), "--quiet"]
    again = runner.invoke(app, ["run", "--recipe", str(recipe), *homes])
    assert again.exit_code == 0, again.output
    runs = (run, Path(again.stdout.strip()))
    first, second = (json.loads((r / "metrics.json").read_text())["backtest"] for r in runs)
    assert first["n_trials"] == second["n_trials"] == 1
    changed = runner.invoke(app, ["run", "--recipe", str(recipe), "--set", "backtest.cost_bps=9", *homes])
    assert changed.exit_code == 0, changed.output
    third = Path(changed.stdout.strip())
    assert json.loads((third / "metrics.json").read_text())["backtest"]["n_trials"] == 2
    page = (third / "backtest" / "report.html").read_text()
    assert "over 2 trials on this dataset when the run was made" in page
    rows = {r["run_id"]: r for r in json.loads(runner.invoke(app, ["runs", "ls", "--json", *homes[2:4]]).stdout)}
    assert {rows[p.name]["n_trials"] for p in (run, Path(again.stdout.strip()), third)} == {2}
