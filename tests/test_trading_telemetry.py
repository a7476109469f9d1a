"""Issue 20 §5: per-epoch validation PnL, turnover and exposure in history.json (models/torch/telemetry.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import TORCH_FAST

from quant_cli.models.registry import create_model
from quant_cli.models.torch.telemetry import Trading, previous_sample, trading_stats
from quant_cli.models.torch.windows import Samples

KEYS = ("val_pnl", "val_pnl_sharpe", "val_turnover", "val_exposure", "val_gross")


def test_the_numbers_are_the_tanh_position_rule_net_of_costs_by_hand() -> None:
    """Two symbols over three timestamps; ends are rows, prev the same symbol's previous row."""
    score = torch.tensor([[1.0], [-0.5], [0.2], [0.4], [-1.0], [0.0]])  # rows: (t0 A, t0 B, t1 A, t1 B, t2 A, t2 B)
    y = torch.tensor([0.5, -1.0, 2.0, 0.0, -1.0, 1.0])  # scaled targets
    data = Samples(
        torch.zeros(6, 1),
        torch.arange(6),
        y=y,
        group=torch.tensor([0, 0, 1, 1, 2, 2]),
        prev=torch.tensor([-1, -1, 0, 1, 2, 3]),
    )
    stats = trading_stats(score, data, Trading(cost=0.001, y_mean=0.001, y_std=0.01))
    pos = np.tanh(score[:, 0].double().numpy())
    ret = y.double().numpy() * 0.01 + 0.001
    before = np.array([0.0, 0.0, pos[0], pos[1], pos[2], pos[3]])
    net = (pos * ret - 0.001 * np.abs(pos - before)).reshape(3, 2).mean(1)
    assert stats["val_pnl"] == pytest.approx(net.mean())
    assert stats["val_pnl_sharpe"] == pytest.approx(net.mean() / net.std(ddof=1))
    assert stats["val_turnover"] == pytest.approx(np.abs(pos - before).mean())
    assert stats["val_exposure"] == pytest.approx(pos.mean())
    assert stats["val_gross"] == pytest.approx(np.abs(pos).mean())


def test_a_previous_row_outside_the_validation_rows_starts_flat() -> None:
    data = Samples(torch.zeros(10, 1), torch.tensor([5, 6, 9]), prev=torch.tensor([4, 5, 8]))
    assert previous_sample(data).tolist() == [-1, 0, -1]


def test_classifiers_and_missing_settings_report_nothing() -> None:
    data = Samples(torch.zeros(2, 1), torch.arange(2), y=torch.tensor([0, 1]))
    assert trading_stats(torch.zeros(2, 3), data, Trading(0.0)) == {}
    assert trading_stats(torch.zeros(2, 1), Samples(torch.zeros(2, 1), torch.arange(2), y=torch.ones(2)), None) == {}


@pytest.mark.parametrize("name,loss", [("lstm", "mse"), ("mlp", "pnl"), ("tcn", "sharpe")])
def test_every_epoch_of_a_regression_fit_records_them(name: str, loss: str) -> None:
    from helpers import model_panel

    X, y, ts, t1, symbols = model_panel(n_ts=40, n_sym=3)
    train = {"epochs": 2, "batch_size": 32, "patience": 0, "loss": loss}
    model = create_model(name, "regression", TORCH_FAST[name], seed=0, threads=1, train=train)
    cut = 90
    model.fit(
        X[:cut],
        y[:cut],
        feature_names=["a", "b", "c"],
        symbols=symbols[:cut],
        ts=ts[:cut],
        X_val=X[cut:],
        y_val=y[cut:],
        symbols_val=symbols[cut:],
    )
    for epoch in model.history_:
        assert all(math.isfinite(epoch[k]) for k in KEYS), epoch
        assert -1 <= epoch["val_exposure"] <= 1 and 0 <= epoch["val_gross"] <= 1 and epoch["val_turnover"] >= 0
