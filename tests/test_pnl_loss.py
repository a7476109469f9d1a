"""Issue 20 §3: `[train] loss = "pnl"`, a differentiable cost-aware PnL loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TORCH_FAST

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.models.registry import create_model
from quant_cli.models.torch.losses import PnL, Previous, loss_fn
from quant_cli.models.torch.windows import previous_rows

TS = torch.tensor([0, 0, 1, 1, 2, 2])  # three timestamps, two symbols each


def test_gradient_flows_through_the_score_and_the_previous_score() -> None:
    out = torch.tensor([[0.3], [-0.2], [0.5], [0.1], [-0.4], [0.2]], requires_grad=True)
    before = torch.tensor([0.1, 0.0, 0.3, -0.2, 0.5, 0.1], requires_grad=True)
    y = torch.tensor([0.01, -0.02, 0.03, 0.00, -0.01, 0.02])
    loss = PnL(cost=0.001, drawdown_penalty=1.0)(out, y, None, TS, Previous(before, torch.ones(6, dtype=torch.bool)))
    loss.backward()
    assert torch.isfinite(loss) and out.grad.abs().sum() > 0 and before.grad.abs().sum() > 0


def test_the_cost_term_charges_exactly_the_turnover_of_a_churning_score() -> None:
    """Same returns, one score that flips sign every bar and one that holds: with costs the
    churning one loses by cost x mean |position change| per timestamp (no cost: equal loss)."""
    y = torch.zeros(6)
    churn = torch.tensor([[2.0], [2.0], [-2.0], [-2.0], [2.0], [2.0]])
    steady = torch.full((6, 1), 2.0)
    known = torch.tensor([False, False, True, True, True, True])
    previous = {
        "churn": Previous(torch.tensor([0.0, 0.0, 2.0, 2.0, -2.0, -2.0]), known),
        "steady": Previous(torch.full((6,), 2.0), known),
    }
    free, costly = PnL(cost=0.0), PnL(cost=0.01)
    assert free(churn, y, None, TS, previous["churn"]) == free(steady, y, None, TS, previous["steady"])
    turnover = torch.tensor([np.tanh(2.0), 2 * np.tanh(2.0), 2 * np.tanh(2.0)])  # per timestamp: entry, flip, flip
    expected = 0.01 * turnover.mean()
    assert torch.isclose(costly(churn, y, None, TS, previous["churn"]), expected.float())
    assert costly(churn, y, None, TS, previous["churn"]) > costly(steady, y, None, TS, previous["steady"])


def test_the_drawdown_penalty_adds_the_paths_worst_fall() -> None:
    out = torch.full((6, 1), 10.0)  # fully long: tanh = 1
    y = torch.tensor([0.02, 0.02, -0.05, -0.05, 0.01, 0.01])  # per timestamp +2%, -5%, +1%
    base, penalised = PnL(), PnL(drawdown_penalty=2.0)
    assert torch.isclose(penalised(out, y, None, TS) - base(out, y, None, TS), torch.tensor(2.0 * 0.05), atol=1e-6)


def test_loss_fn_builds_pnl_with_its_settings() -> None:
    loss = loss_fn("pnl", False, cost=0.5, drawdown_penalty=0.25)
    assert isinstance(loss, PnL) and (loss.cost, loss.drawdown_penalty) == (0.5, 0.25) and loss.needs_previous


def test_previous_rows_are_the_same_symbols_earlier_timestamp() -> None:
    symbols = np.array(["B", "A", "B", "A", "B"])
    ts = np.array([1, 1, 2, 3, 0]).astype("datetime64[D]").astype("datetime64[us]")
    assert previous_rows(5, symbols, ts).tolist() == [4, -1, 0, 1, -1]
    assert previous_rows(3, None, None).tolist() == [-1, 0, 1]  # no symbols, no times: row order is time order


def planted(n_ts: int = 240, n_sym: int = 4, seed: int = 0):
    """One informative feature: the label's sign follows it, the other features are noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_ts * n_sym, 3)).astype(np.float32)
    y = 0.01 * np.sign(X[:, 0]) + rng.normal(scale=0.005, size=len(X))
    ts = np.datetime64("2021-01-01", "us") + np.repeat(np.arange(n_ts), n_sym).astype("timedelta64[D]")
    symbols = np.tile(np.array([f"S{i}" for i in range(n_sym)]), n_ts)
    return X, y, ts, symbols


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_a_model_trained_on_pnl_learns_the_planted_sign(name: str) -> None:
    X, y, ts, symbols = planted()
    train = {"epochs": 8, "batch_size": 64, "learning_rate": 0.01, "patience": 0, "loss": "pnl", "pnl_cost_bps": 1.0}
    model = create_model(name, "regression", TORCH_FAST[name], seed=0, threads=1, train=train)
    cut = 720
    model.fit(X[:cut], y[:cut], feature_names=["a", "b", "c"], symbols=symbols[:cut], ts=ts[:cut])
    score = model.predict(X[cut:], symbols=symbols[cut:])
    known = np.isfinite(score)
    assert known.sum() > 100
    assert (np.sign(score[known]) == np.sign(X[cut:, 0][known])).mean() > 0.8


def test_train_with_the_pnl_loss_end_to_end(runner, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_store(data_dir, "p", generate(symbols=3, bars=260, seed=2), "test")
    recipe = tmp_path / "pnl.toml"
    recipe.write_text(
        '[data]\ndataset = "p"\n[features]\nsets = ["core"]\nwindows = [5]\n'
        '[model]\nname = "mlp"\nparams = { hidden = [8] }\n'
        '[train]\nepochs = 2\nthreads = 1\nloss = "pnl"\n'
        "pnl_cost_bps = 10.0\npnl_drawdown_penalty = 0.5\n"
    )
    args = ["train", "--recipe", str(recipe), "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    history = json.loads((run / "model" / "history.json").read_text())
    epochs = history["epochs"] if isinstance(history, dict) else history
    assert len(epochs) == 2 and all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"]) for e in epochs)


def test_recipe_defaults_show_the_pnl_keys(runner) -> None:
    result = runner.invoke(app, ["recipe", "defaults"])
    assert result.exit_code == 0, result.output
    assert "pnl_cost_bps" in result.output and "pnl_drawdown_penalty" in result.output


def test_a_sequence_samples_previous_window_is_its_own_symbols_window_one_bar_earlier() -> None:
    """The turnover's previous position comes from the window ending at t-1 of the same symbol:
    never a later row, never another symbol's, and none for a symbol's first full window."""
    from quant_cli.models.panel import as_panel_rows

    X, y, ts, symbols = planted(n_ts=12, n_sym=2)
    train = {"epochs": 1, "batch_size": 8, "patience": 0, "loss": "pnl"}
    model = create_model("lstm", "regression", TORCH_FAST["lstm"], seed=0, threads=1, train=train)
    model.fit(X, y, feature_names=["a", "b", "c"], symbols=symbols, ts=ts)
    rows = as_panel_rows(X, symbols, ts)
    samples, _ = model._samples(model._rows(rows, symbols, ts), y)
    ends, prev = samples.ends.numpy(), samples.prev.numpy()
    panel = rows.panel
    first = panel.position[ends] == TORCH_FAST["lstm"]["seq_len"] - 1
    assert (prev[first] == -1).all() and (prev[~first] == ends[~first] - 1).all()
    assert (panel.symbols[prev[~first]] == panel.symbols[ends[~first]]).all()
