"""`qfactory finetune --run RUN --method ppo` (issue 20 §3): a trained lstm run fine-tuned by PPO
on a tiny synthetic panel, for real. The environment books exactly what the backtest books
(next-bar fills, costs, borrow, limits); the fine-tuned run is an ordinary run that backtest,
bundle and predict take unchanged; the position at t does not move when every later bar is
rewritten; the run reports the policy's net exposure and beta beside its Sharpe; walk-forward and
non-sequence models are refused in one line."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from helpers import prices_rewritten_after
from typer.testing import CliRunner

from quant_cli import stages
from quant_cli.backtest.engine import run_backtest
from quant_cli.cli import app
from quant_cli.data.store import load_bars
from quant_cli.data.synthetic import generate
from quant_cli.finetune.env import advantages, market
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import Run
from quant_cli.serve.bundle import load

RECIPE = """
[run]
name = "seq"
seed = 5
[data]
dataset = "ft"
source = "synthetic"
[data.synthetic]
symbols = 3
bars = 500
[features]
sets = ["core"]
windows = [5, 10]
[label]
horizon = 1
[model]
name = "lstm"
[model.params]
seq_len = 4
hidden = 8
[train]
epochs = 1
batch_size = 64
threads = 1
[backtest]
cost_bps = 5.0
[finetune]
updates = 2
steps_per_rollout = 48
minibatch = 64
patience = 0
"""
PPO_SETS = ["finetune.learning_rate=0.001", "backtest.borrow_bps=30"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(data dir, the supervised run, the fine-tuned run, the finetune command's --json output)."""
    root = tmp_path_factory.mktemp("finetune")
    (root / "r.toml").write_text(RECIPE)
    data, runs = root / "data", root / "runs"
    source = stages.train_new(load_recipe(root / "r.toml"), data, runs).run
    sets = [a for s in PPO_SETS for a in ("--set", s)]
    result = CliRunner().invoke(
        app,
        ["finetune", "--run", str(source.path), "--method", "ppo", *sets, "--json", "--data-dir", str(data)]
        + ["--runs-dir", str(runs)],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    return data, source, Run(runs / out["run_id"]), out


def test_finetuned_run_records_its_origin_and_trades_positions(tuned):
    _, source, run, out = tuned
    manifest = run.manifest()
    assert manifest["finetuned_from"] == {"run": source.id, "method": "ppo"}
    assert manifest["stages"]["train"]["method"] == "ppo" and manifest["stages"]["split"]["status"] == "done"
    recipe = run.recipe()
    assert recipe["finetune"]["method"] == "ppo" and recipe["finetune"]["learning_rate"] == 0.001
    assert (recipe["backtest"]["strategy"], recipe["backtest"]["borrow_bps"]) == ("position", 30.0)
    model = read_json(run.path / "model" / "model.json")
    assert model["name"] == "lstm" and model["fit_info"]["policy"]["from_run"] == source.id
    scores = pl.read_parquet(run.path / "predictions.parquet")["score"]
    assert scores.len() > 0 and scores.abs().max() <= 1.0
    history = read_json(run.path / "finetune.json")["history"]
    assert [h["update"] for h in history] == [0, 1, 2]


def test_metrics_report_the_policys_exposure_and_beta_beside_its_sharpe(tuned):
    _, _, run, out = tuned
    block = read_json(run.path / "metrics.json")["finetune"]
    assert block == out["metrics"]["finetune"]
    assert {"sharpe", "net_exposure", "exposure", "beta", "mostly_market", "mean_turnover"} <= set(block["val"])
    assert block["best_update"] in (0, 1, 2) and block["updates_run"] == 2
    # the kept update's validation Sharpe is the best one seen (update 0: the supervised model itself)
    history = read_json(run.path / "finetune.json")["history"]
    assert block["val"]["sharpe"] == pytest.approx(max(h["val_sharpe"] for h in history), rel=1e-9)


def test_backtest_bundle_and_predict_take_the_finetuned_run(tuned, tmp_path):
    data, _, run, _ = tuned
    runner = CliRunner()
    result = runner.invoke(app, ["backtest", "--run", str(run.path), "--json", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert read_json(run.path / "backtest" / "metrics.json")["config"]["strategy"] == "position"
    assert json.loads(result.stdout)["backtest"]["periods"] > 0
    result = runner.invoke(app, ["bundle", "--run", str(run.path), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "scores.parquet"
    result = runner.invoke(
        app,
        ["predict", "--bundle", str(run.path / "bundle"), "--source", "ft", "--out", str(out), "--all"]
        + ["--data-dir", str(data)],
    )
    assert result.exit_code == 0, result.output
    served = pl.read_parquet(out).with_columns(pl.col("symbol").cast(pl.String))
    trained = pl.read_parquet(run.path / "predictions.parquet").with_columns(pl.col("symbol").cast(pl.String))
    joined = trained.join(served, on=["symbol", "ts"], suffix="_served")
    test_rows = trained.filter(pl.col("segment") == "test").height
    assert joined.filter(pl.col("segment") == "test").height == test_rows > 0  # every test position is served
    assert np.allclose(joined["score"], joined["score_served"], rtol=0, atol=1e-6)


def test_the_position_at_t_ignores_every_later_bar(tuned):
    """The policy's state is the window ending at t: rewrite every bar after t and the
    deterministic position at and before t stays bit-identical, while later positions move."""
    data, _, run, _ = tuned
    bundle = (
        load(run.path / "bundle") if (run.path / "bundle").is_dir() else load(stages.bundle_existing(run, data).bundle)
    )
    bars = load_bars(data, "ft").with_columns(pl.col("symbol").cast(pl.String))
    stamps = bars["ts"].unique().sort()
    cutoff = stamps[int(stamps.len() * 0.8)]
    before = bundle.score_bars(bars, every_bar=True)
    after = bundle.score_bars(prices_rewritten_after(bars, cutoff, seed=3), every_bar=True)
    joined = before.join(after, on=["symbol", "ts"], suffix="_rewritten")
    early = joined.filter(pl.col("ts") <= cutoff)
    assert early.height > 0 and (early["score"] == early["score_rewritten"]).all()
    late = joined.filter(pl.col("ts") > cutoff)
    assert (late["score"] != late["score_rewritten"]).any()


# ---- the environment is the backtest ----------------------------------------------------------------


def _positions(seed: int = 0):
    bars = generate(symbols=4, bars=80, seed=seed).with_columns(pl.col("symbol").cast(pl.String))
    rows = bars.select("symbol", "ts").filter(pl.col("ts") < bars["ts"].max() - dt.timedelta(days=5))
    rng = np.random.default_rng(seed)
    return bars, rows.with_columns(score=pl.Series(np.tanh(rng.normal(0, 1.5, rows.height))))


def test_the_environment_books_what_the_backtest_books():
    """Costs with slippage, borrow on shorts and every limit: per period the environment's book
    is the backtest engine's curve, and its per-symbol rewards sum to it."""
    bars, signal = _positions()
    cfg = {
        "strategy": "position",
        "cost_bps": 10.0,
        "slippage_bps": 3.0,
        "borrow_bps": 200.0,
        "max_weight": 0.2,
        "max_net": 0.1,
        "max_gross": 0.6,
    }
    m = market(signal.select("symbol", "ts"), bars, cfg, 252.0)
    positions = m.grid.dense(signal, "score")
    book = m.trade(positions)
    engine = run_backtest(signal, bars, cfg, 252.0).curve
    assert engine.height == m.steps
    assert np.allclose(book.net, engine["net"].to_numpy(), rtol=0, atol=1e-15)
    n = np.isfinite(positions).sum(axis=1)
    assert np.allclose(book.pnl.sum(axis=1) / n, engine["net"].to_numpy(), rtol=0, atol=1e-15)


def test_a_decision_at_t_earns_the_return_from_the_next_bar_on():
    """next_close: a position decided at the close of t fills at t+1's close and earns t+1 → t+2."""
    bars, signal = _positions(1)
    one = signal.filter(pl.col("symbol") == "S000").with_columns(score=pl.lit(0.0))
    t = 10
    one = one.with_columns(score=pl.when(pl.int_range(pl.len()) == t).then(1.0).otherwise(0.0))
    m = market(one.select("symbol", "ts"), bars, {"cost_bps": 0.0, "execution": "next_close"}, 252.0)
    book = m.trade(m.grid.dense(one, "score"))
    close = bars.filter(pl.col("symbol") == "S000").sort("ts")["close"].to_numpy()
    assert book.pnl[t, 0] == pytest.approx(close[t + 2] / close[t + 1] - 1.0, rel=1e-12)
    assert np.count_nonzero(book.pnl[:, 0]) == 1 and book.before[t + 1, 0] != 0.0  # held going into t+1


def test_gae_with_unit_gamma_and_lambda_is_the_reward_to_go():
    reward = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    value = np.array([[0.5, 0.0], [0.2, 0.0], [0.1, 9.0]])
    valid = np.array([[True, False], [True, True], [True, True]])
    adv, ret = advantages(reward, value, valid, gamma=1.0, lam=1.0)
    assert np.allclose(ret[:, 0], [6.0, 5.0, 3.0]) and np.allclose(ret[1:, 1], [6.0, 5.0])
    assert np.allclose(adv, ret - np.where(valid, value, 0.0))


# ---- refusals ---------------------------------------------------------------------------------------------


def test_walkforward_refuses_a_finetuned_runs_recipe(tuned, runner):
    data, _, run, _ = tuned
    result = runner.invoke(app, ["walkforward", "--recipe", str(run.path / "recipe.toml"), "--data-dir", str(data)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: finetune.method = 'ppo': this recipe is a fine-tuned run's, and train, walkforward and run fit "
        "from labels only (there is no per-fold fine-tuning); set finetune.method = 'none' to fit the supervised "
        "model, then `qfactory finetune --run RUN --method ppo` (compare them with benchmarks/ppo_vs_supervised.py)"
    )


def test_a_model_that_is_not_a_torch_sequence_model_is_refused(tuned, runner, tmp_path):
    data, source, _, _ = tuned
    recipe = load_recipe(source.path / "recipe.toml")
    recipe["model"].update(name="linear", params={})
    linear = stages.train_new(recipe, data, tmp_path).run
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(
        app,
        [
            "finetune",
            "--run",
            str(linear.path),
            "--method",
            "ppo",
            "--data-dir",
            str(data),
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: run {linear.id}'s model 'linear' is not a torch sequence model; PPO fine-tunes the network of one "
        "(e.g. lstm, gru, tcn, transformer): train one first, e.g. --set model.name=lstm"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory was left behind


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--method", "dqn"], "error: --method 'dqn' is not a fine-tuning method; allowed: 'ppo'"),
        (
            ["--method", "ppo", "--set", "model.params.hidden=4"],
            "error: finetune --set model.params.hidden: only finetune.* keys and backtest.{cost_bps, slippage_bps, "
            "min_trade_cost, capital, borrow_bps, max_gross, max_net, max_weight, benchmark, periods_per_year, "
            "segment} can change; the model, features and split are run {run}'s",
        ),
    ],
)
def test_bad_options_are_refused_in_one_line(tuned, runner, args, line):
    data, source, _, _ = tuned
    result = runner.invoke(app, ["finetune", "--run", str(source.path), *args, "--data-dir", str(data)])
    assert result.exit_code == 2
    assert result.stderr.strip() == line.replace("{run}", source.id)


def test_an_update_moves_the_mean_toward_the_actions_that_paid():
    """Signs of the clipped objective: draws above the mean that paid (positive advantage) and draws
    below it that lost both push the actor's mean up."""
    import torch

    from quant_cli.finetune.ppo import ActorCritic, PPOConfig, Rollout, means, update
    from quant_cli.models.torch.recurrent import Recurrent, RecurrentConfig
    from quant_cli.models.torch.windows import Samples

    torch.manual_seed(0)
    policy = ActorCritic(Recurrent(RecurrentConfig(n_inputs=2, hidden=4, seq_len=3, dropout=0.0)), 0.5)
    policy.eval()
    samples = Samples(torch.randn(40, 2), torch.arange(2, 40), 3)
    start = means(policy, samples, "cpu")
    side = np.where(np.arange(len(start)) % 2 == 0, 1.0, -1.0)
    u = start + 0.5 * side
    logp = -0.5 * ((u - start) / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)
    roll = Rollout(np.arange(len(start)), np.zeros(len(start)), u, logp, side, np.zeros(len(start)), 0.0, 0.0)
    update(
        policy,
        torch.optim.AdamW(policy.parameters(), lr=0.01),
        samples,
        roll,
        PPOConfig(epochs=3, target_kl=0.0),
        0,
        "cpu",
    )
    assert (means(policy, samples, "cpu") - start).mean() > 0.01
