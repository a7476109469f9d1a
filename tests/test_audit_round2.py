"""Round-2 hostile-operator audit of the merged commands: each test here failed before its fix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from quant_cli.cli import app

RECIPE = """
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
    (root / "r.toml").write_text(RECIPE)
    result = CliRunner().invoke(app, ["ingest", "--recipe", str(root / "r.toml"), "--quiet", "--data-dir", str(root / "data")])
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
    result = runner.invoke(app, ["backtest", "--weights", str(file), "--recipe", str(root / "r.toml"),
                                 "--data-dir", str(root / "data"), "--runs-dir", str(runs)])
    return result, file, runs


def test_weights_after_the_last_bar_are_one_line_and_leave_no_run(runner, home, tmp_path):
    """Was exit 1 'unexpected failure: TypeError' with a committed, empty backtest run left behind."""
    result, file, runs = _backtest(runner, home, _weights(home[1], shift_days=3000), tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: nothing to backtest: no weight has a bar to trade on")
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_weights_naming_symbols_the_dataset_lacks_are_refused(runner, home, tmp_path):
    """Was exit 0: phantom positions in unknown symbols took gross exposure and paid costs."""
    bars = home[1]
    frame = pl.concat([_weights(bars), _weights(bars, symbols=["NOPE1", "NOPE2"])])
    result, file, _ = _backtest(runner, home, frame, tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: weights name 2 symbol(s) with no bars in the dataset (NOPE1, NOPE2); drop those rows or ingest the symbols")


def test_a_finished_weights_backtest_run_is_listed_ok(runner, home, tmp_path):
    """Was state 'interrupted' / interrupted ['train']: metrics.json, which backtest and walkforward
    also write, counted as a train leftover, so every walk-forward and weights run looked killed."""
    import json

    result, _, runs = _backtest(runner, home, _weights(home[1]), tmp_path)
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["runs", "ls", "--json", "--runs-dir", str(runs)])
    row = json.loads(listed.stdout)[0]
    assert (row["state"], row["interrupted"], row["committed"]) == ("ok", [], ["backtest"])


@pytest.mark.parametrize("extra, line", [
    ('[model]\nname = "lstm"\n[model.params]\nnum_leaves = 7\n',
     "error: model.params.num_leaves is not a parameter of model 'lstm'; allowed: 'seq_len', 'dropout', 'embedding_dim', 'inputs', "
     "'hidden', 'layers'; `qfactory train --list-models` lists each model's parameters"),
    ('[model]\nname = "gru"\n[split]\nmethod = "purged_kfold"\n',
     "error: split.method 'purged_kfold' is not supported with sequence model 'gru' (windows read every past row, which per-fold "
     "preprocessing cannot provide); use split.method = \"chronological\""),
])
def test_split_refuses_a_recipe_its_run_could_never_train(runner, home, tmp_path, extra, line):
    """Was exit 0: `split --recipe` committed a run whose fixed recipe `train --run` then always refused."""
    root, _ = home
    recipe = tmp_path / "s.toml"
    recipe.write_text(RECIPE.replace('[model]\nname = "linear"\n', "") + extra)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["split", "--recipe", str(recipe), "--data-dir", str(root / "data"), "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == line
    assert not runs.exists() or not list(runs.iterdir())


def test_train_on_a_run_without_a_split_keeps_its_metrics(runner, home, tmp_path):
    """Was data loss: `train --run` on a weights (or walk-forward) run deleted its metrics.json —
    the backtest / walkforward block the trial ledger reads — as a 'train leftover', then failed."""
    import json

    result, _, runs = _backtest(runner, home, _weights(home[1]), tmp_path)
    run = Path(result.stdout.strip())
    before = (run / "metrics.json").read_text()
    trained = runner.invoke(app, ["train", "--run", str(run), "--data-dir", str(home[0] / "data")])
    assert trained.exit_code == 2, trained.output
    assert trained.output.strip().splitlines()[-1].startswith(f"error: run {run.name} has no complete split/")
    assert (run / "metrics.json").read_text() == before and "backtest" in json.loads(before)


def test_a_sequence_bundle_scores_the_latest_bar_like_training(runner, home, tmp_path):
    """Was NaN for every symbol: predict/serve handed the model only the rows to score (the latest
    bar), so a window had no history, and required_bars ignored seq_len; bundle verify passed
    with a 'max relative difference nan' on an all-null example."""
    import json

    root, bars = home
    recipe = tmp_path / "seq.toml"
    recipe.write_text(RECIPE.replace('name = "linear"', 'name = "gru"\n[model.params]\nseq_len = 6\nhidden = 4')
                      + "epochs = 1\n[preprocess]\nfill = \"zero\"\n")
    data, runs = str(root / "data"), str(tmp_path / "runs")
    trained = runner.invoke(app, ["train", "--recipe", str(recipe), "--quiet", "--data-dir", data, "--runs-dir", runs])
    assert trained.exit_code == 0, trained.output
    run = Path(trained.stdout.strip())
    bundled = runner.invoke(app, ["bundle", "--run", str(run), "--quiet", "--data-dir", data])
    assert bundled.exit_code == 0, bundled.output
    expected = json.loads((run / "bundle" / "example" / "expected.json").read_text())["predictions"]
    assert all(p["score"] is not None for p in expected)
    required = json.loads((run / "bundle" / "input_schema.json").read_text())["x-qfactory"]["required_bars"]
    lookback = json.loads((run / "bundle" / "lookback.json").read_text())["required_bars"]
    assert required == lookback + 5
    scored = runner.invoke(app, ["predict", "--bundle", str(run / "bundle"), "--source", "syn", "--all", "--out", str(tmp_path / "s.parquet"),
                                 "--data-dir", data])
    assert scored.exit_code == 0, scored.output
    served = pl.read_parquet(tmp_path / "s.parquet")
    assert served["score"].is_finite().all()
    both = pl.read_parquet(run / "predictions.parquet").join(served, on=["symbol", "ts"], suffix="_served")
    assert both.height > 0 and (both["score"] - both["score_served"]).abs().max() < 1e-5


@pytest.mark.parametrize("key", ["max_gross", "max_weight"])
def test_a_cap_that_forbids_every_position_is_a_recipe_error(runner, tmp_path, key):
    """Was exit 0 with a backtest that never traded (Sharpe nan) counted as a trial."""
    (tmp_path / "r.toml").write_text(RECIPE)
    result = runner.invoke(app, ["recipe", "show", "--recipe", str(tmp_path / "r.toml"), "--set", f"backtest.{key}=0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == f"error: --set backtest.{key}=0: 'backtest.{key}' must be at least 0.001, got 0"


@pytest.fixture(scope="module")
def bundle(home, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    root, _ = home
    runs = tmp_path_factory.mktemp("audit-bundle")
    trained = CliRunner().invoke(app, ["train", "--recipe", str(root / "r.toml"), "--quiet", "--data-dir", str(root / "data"),
                                       "--runs-dir", str(runs)])
    assert trained.exit_code == 0, trained.output
    bundled = CliRunner().invoke(app, ["bundle", "--run", trained.stdout.strip(), "--quiet", "--data-dir", str(root / "data")])
    assert bundled.exit_code == 0, bundled.output
    return Path(bundled.stdout.strip())


def test_serve_refuses_a_port_out_of_range(runner, tmp_path):
    """Was a server 'on http://127.0.0.1:99999' that never listened (and -1: uvicorn's exit 3)."""
    result = runner.invoke(app, ["serve", "--bundle", str(tmp_path / "none"), "--port", "99999"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: Invalid value for '--port': Input should be less than or equal to 65535 (see `qfactory serve --help`)"


def test_serve_that_cannot_bind_is_one_line_exit_2(runner, bundle):
    """Was uvicorn's own 'ERROR: [Errno 98] ...' and exit 3 for a port in use or an unknown host."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--bundle", str(bundle), "--port", str(port)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: serve: cannot listen on 127.0.0.1:{port} (") and line.endswith(
        "); free the port or pick another with --port, and bind a local address with --host")


def test_serve_holds_its_port_from_the_check_until_uvicorn_serves_it():
    """Was a probe socket bound and closed before uvicorn bound again: another process could take
    the port in between. The checked socket itself is handed to uvicorn, listening."""
    from quant_cli.errors import RecipeError
    from quant_cli.serve.listen import bound_socket

    held = bound_socket("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        with pytest.raises(RecipeError, match=f"cannot listen on 127.0.0.1:{port}"):
            bound_socket("127.0.0.1", port).close()
    finally:
        held.close()


def test_a_failed_parallel_walkforward_is_one_line_without_joblib_warnings(runner, home, tmp_path):
    """Was the error line followed by joblib's 'UserWarning: 4 tasks ... have been cancelled' (two more
    lines): the abandoned worker pool was collected after the command's warning filter ended."""
    import warnings

    root, _ = home
    recipe = tmp_path / "wf.toml"
    recipe.write_text(RECIPE.replace('name = "linear"', 'name = "gru"\n[model.params]\nseq_len = 32\nhidden = 4')
                      + "epochs = 1\n[preprocess]\nfill = \"zero\"\n[walkforward]\ntrain = 20\ntest = 40\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["walkforward", "--recipe", str(recipe), "--jobs", "2", "--quiet",
                                     "--data-dir", str(root / "data"), "--runs-dir", str(tmp_path / "runs")])
        import gc

        gc.collect()
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: walk-forward fold 0 (")
    assert [str(w.message) for w in caught if "cancelled" in str(w.message)] == []
