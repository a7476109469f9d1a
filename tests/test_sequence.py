"""Sequence models (issue 10): windows, the training loop, checkpoints and resume, the train stage
and the CLI, mixed ensembles. Sizes are tiny: torch on two shared cores is slow. What every torch
model must do (fit/save/load, overfit, seed, resume, bundle causality) is checked once per model
by tests/test_model_zoo.py."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers import TORCH_FAST

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import pin, write_store
from quant_cli.data.synthetic import generate
from quant_cli.dataset.table import prepare
from quant_cli.errors import ModelError
from quant_cli.features.bars import bar_channels, channel_names
from quant_cli.features.testing import perturb_after
from quant_cli.io import read_json
from quant_cli.models import device as device_mod
from quant_cli.models.panel import Panel, PanelRows
from quant_cli.models.registry import create_model
from quant_cli.models.torch.windows import gather
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter
from quant_cli.runs.directory import Run
from quant_cli.stages import common
from quant_cli.stages.fitting import build_panel, predict_frame

_TICK = dt.timedelta(microseconds=1)

SMALL_LSTM = """
[run]
name = "seq"
seed = 3
[data]
dataset = "syn"
source = "synthetic"
[data.synthetic]
symbols = 4
bars = 200
[label]
horizon = 2
[model]
name = "lstm"
symbol_encoding = "embedding"
[model.params]
seq_len = 8
hidden = 8
[train]
threads = 1
epochs = 3
batch_size = 64
patience = 0
"""


@pytest.fixture
def lstm_recipe(tmp_path) -> Path:
    path = tmp_path / "lstm.toml"
    path.write_text(SMALL_LSTM)
    return path


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(device_mod, "_cuda_count", lambda: 0)
    monkeypatch.setattr(device_mod, "_warned", set())


def test_list_models_shows_sequence_models(runner):
    result = runner.invoke(app, ["train", "--list-models"])
    assert result.exit_code == 0
    line = next(row for row in result.stdout.splitlines() if row.startswith("lstm "))
    assert "sequence" in line and "tabular" not in line and "gpu" in line
    assert "    seq_len = 32: an integer in [1, 4096]" in result.stdout


# ---- windows ------------------------------------------------------------------------------------


def _windows(panel: Panel, rows: PanelRows, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's own gather for the rows with a full window: (windows, those rows)."""
    ends = rows.rows[rows.full_window(seq_len)]
    return gather(torch.from_numpy(panel.values), torch.from_numpy(ends), seq_len).numpy(), ends


def test_every_window_is_one_symbol_and_ends_at_its_row():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=6)
    symbols = np.repeat([f"S{i}" for i in range(6)], lengths)
    ts = (
        np.concatenate([np.sort(rng.choice(100, n, replace=False)) for n in lengths])
        .astype("datetime64[D]")
        .astype("datetime64[us]")
    )
    values = np.arange(len(symbols), dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # value = row number
    panel = Panel(values, symbols, ts)
    for seq_len in (1, 3, 7):
        rows = PanelRows(panel, rng.permutation(len(panel)))
        windows, ends = _windows(panel, rows, seq_len)
        picked = windows[:, :, 0].astype(np.int64)  # (n, L) the panel rows each window read
        assert (picked[:, -1] == ends).all()  # ends at its own row (t inclusive)
        assert (np.diff(picked, axis=1) == 1).all()  # consecutive rows, oldest first
        assert (panel.symbols[picked] == panel.symbols[ends][:, None]).all()  # one symbol
        expected = sum(max(0, n - seq_len + 1) for n in lengths)
        assert len(ends) == expected  # only warm-up rows lack a window


def _prepared(data_dir, bars, recipe):
    write_store(data_dir, "p", bars, "test")
    return prepare(recipe, pin(data_dir, "p"))


def test_window_at_t_ignores_every_bar_after_t_end_to_end(tmp_path):
    """Bars → features → train-only preprocessing → panel → window: rewriting every bar after t
    changes no input of any row at or before t (and does change later ones)."""
    bars = generate(symbols=3, bars=220, seed=5)
    bars = bars.filter(~((pl.col("symbol") == "S001") & pl.col("ts").dt.day().is_in([3, 4])))  # a different calendar
    recipe = load_recipe(
        None,
        [
            'data.dataset="p"',
            'features.sets=["core"]',
            "label.horizon=3",
            'split.val_start="2015-07-01"',
            'split.test_start="2015-09-01"',
            'model.name="lstm"',
        ],
    )
    first = _prepared(tmp_path / "a", bars, recipe)
    panel_a, _ = build_panel(first, bar_channels(bars, ["1w"]))  # features AND raw-bar channels (weekly too)
    assert panel_a.channels == tuple(channel_names(["1w"]))
    all_rows = PanelRows(panel_a, np.arange(len(panel_a)))
    for i, cut in enumerate(
        [dt.datetime(2015, 7, 1, tzinfo=dt.timezone.utc) - _TICK, dt.datetime(2015, 9, 15, tzinfo=dt.timezone.utc)]
    ):
        changed = perturb_after(bars, cut, seed=i)
        panel_b, _ = build_panel(_prepared(tmp_path / f"b{i}", changed, recipe), bar_channels(changed, ["1w"]))
        assert (panel_a.symbols == panel_b.symbols).all() and (panel_a.ts == panel_b.ts).all()
        for seq_len in (1, 16):
            win_a, ends = _windows(panel_a, all_rows, seq_len)
            win_b, _ = _windows(panel_b, all_rows, seq_len)
            before = panel_a.ts[ends] <= np.datetime64(cut.replace(tzinfo=None), "us")
            assert (win_a[before] == win_b[before]).all(), f"a window at or before {cut} read a later bar"
            assert not (win_a[~before] == win_b[~before]).all()  # the rewrite did reach later windows


def test_panel_keeps_excluded_rows_as_past_inputs(tmp_path):
    bars = generate(symbols=2, bars=150, seed=1)
    recipe = load_recipe(None, ['data.dataset="p"', "label.horizon=5", 'model.name="lstm"'])
    prepared = _prepared(tmp_path, bars, recipe)
    panel, index = build_panel(prepared)
    assert len(panel) == prepared.rows.height > prepared.kept.height  # purged/embargoed/unlabelled rows stay


def test_bar_channels_are_scale_free_and_see_a_coarse_bar_only_once_closed():
    bars = generate(symbols=2, bars=40, seed=3)
    channels = bar_channels(bars, ["1w"])
    scaled = bar_channels(bars.with_columns(pl.col("open", "high", "low", "close") * 1000), ["1w"])
    assert channels.equals(scaled)  # a price level does not change a channel
    one = bars.filter(pl.col("symbol") == "S000")
    friday = one.filter(pl.col("ts").dt.weekday() == 5)["ts"][1]  # the second week's last bar
    week = one.filter((pl.col("ts") > friday - dt.timedelta(days=5)) & (pl.col("ts") <= friday))
    first_prev = one.filter(pl.col("ts") <= friday - dt.timedelta(days=5))["close"][-1]
    row = channels.filter((pl.col("symbol") == "S000") & (pl.col("ts") > friday)).row(0, named=True)  # next Monday
    assert row["bar_close_1w"] == pytest.approx(math.log(week["close"][-1] / first_prev), rel=1e-5)
    on_friday = channels.filter((pl.col("symbol") == "S000") & (pl.col("ts") == friday)).row(0, named=True)
    assert on_friday["bar_close_1w"] != row["bar_close_1w"]  # the week is still forming on its own Friday


def test_a_bars_model_reads_channels_and_refuses_a_panel_without_them():
    X, y, symbols = _tiny(True)
    ts = np.tile(np.arange(48).astype("datetime64[D]").astype("datetime64[us]"), 2)
    channels = np.random.default_rng(1).normal(size=(len(X), 2)).astype(np.float32)
    with_bars = PanelRows(Panel(np.hstack([X, channels]), symbols, ts, ("bar_a", "bar_b")), np.arange(len(X)))
    model = create_model("gru", "regression", {**TORCH_FAST["gru"], "inputs": "bars"}, 1, 1, train={"epochs": 1})
    model.fit(with_bars, y, feature_names=["a", "b", "c"])
    assert model.config_.n_inputs == 2 and model.fit_info()["channels"] == ["bar_a", "bar_b"]
    assert with_bars.matrix().shape == (len(X), 3)  # tabular members still see the features only
    with pytest.raises(ModelError, match="model.params.inputs 'bars' needs raw-bar channels beside the features"):
        model.predict(PanelRows(Panel(X, symbols, ts), np.arange(len(X))))


# ---- the models and the loop ----------------------------------------------------------------------


def _tiny(sequence: bool, n_sym: int = 2, n: int = 48, seed: int = 0):
    """y is the sum of feature 0 over the last three rows (sequence) or x0·x1 + x2 (tabular)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_sym * n, 3)).astype(np.float32)
    symbols = np.repeat([f"S{i}" for i in range(n_sym)], n)
    if not sequence:
        return X, X[:, 0] * X[:, 1] + X[:, 2], symbols
    y = np.concatenate([np.convolve(X[i * n : (i + 1) * n, 0], np.ones(3))[:n] for i in range(n_sym)])
    return X, y, symbols


def test_tcn_receptive_field_is_checked_against_seq_len():
    with pytest.raises(
        ModelError,
        match=r"model 'tcn': the receptive field of 2 levels with kernel_size 2 is 7 steps, shorter than seq_len 8",
    ):
        create_model("tcn", "regression", {"seq_len": 8, "levels": 2, "kernel_size": 2}, 1, 1)
    create_model("tcn", "regression", {"seq_len": 7, "levels": 2, "kernel_size": 2}, 1, 1)


def test_transformer_options_and_classification():
    X, y, symbols = _tiny(True, n_sym=3)
    label = np.where(y > 0.5, 1.0, np.where(y < -0.5, -1.0, 0.0))
    for extra in ({"positions": "rotary", "pooling": "attention"}, {"positions": "learned", "pooling": "last"}):
        model = create_model(
            "transformer",
            "classification",
            {**TORCH_FAST["transformer"], **extra},
            1,
            1,
            symbol_encoding="index",
            train={"epochs": 2, "batch_size": 32},
        )
        proba = model.fit(X, label, feature_names=["a", "b", "c"], symbols=symbols).predict_proba(X, symbols=symbols)
        scored = np.isfinite(proba).all(axis=1)
        assert scored.sum() == len(X) - 3 * 3 and np.allclose(proba[scored].sum(axis=1), 1.0)


def test_sharpe_loss_is_minus_mean_over_std_of_per_timestamp_portfolio_returns():
    from quant_cli.models.torch.losses import sharpe

    score = torch.tensor([[0.5], [-1.0], [2.0], [0.1]])
    y = torch.tensor([0.01, -0.02, 0.03, -0.01])
    group = torch.tensor([7, 7, 9, 9])
    pnl = torch.tanh(score[:, 0]) * y
    per_ts = torch.stack([pnl[:2].mean(), pnl[2:].mean()])
    assert torch.allclose(sharpe(score, y, None, group), -per_ts.mean() / (per_ts.std() + 1e-6))


@pytest.mark.parametrize("recipe", ["lstm.toml", "transformer.toml"])
def test_shipped_recipes_load_and_build_their_model(recipe):
    loaded = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / recipe)
    model = common.make_model(loaded)
    assert model.sequence and model.loop.epochs == loaded["train"]["epochs"]


def test_classifier_refuses_a_regression_loss():
    with pytest.raises(
        ModelError, match="train.loss 'sharpe' is a regression loss; a classifier trains on cross-entropy"
    ):
        create_model("lstm", "classification", {}, 1, 1, train={"loss": "sharpe"})


@pytest.mark.parametrize("loss,monitor", [("sharpe", "ic"), ("huber", "loss")])
def test_losses_and_monitors_train(loss, monitor):
    X, y, symbols = _tiny(True, n_sym=4)
    ts = np.tile(np.arange(48).astype("datetime64[D]").astype("datetime64[us]"), 4)
    model = create_model(
        "gru",
        "regression",
        TORCH_FAST["gru"],
        1,
        1,
        train={"epochs": 4, "batch_size": 32, "learning_rate": 0.01, "loss": loss, "monitor": monitor, "patience": 2},
    )
    model.fit(
        X[:160],
        y[:160],
        feature_names=["a", "b", "c"],
        symbols=symbols[:160],
        ts=ts[:160],
        X_val=X[160:],
        y_val=y[160:],
        symbols_val=symbols[160:],
        early_stopping=1,
    )
    history = model.history_
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in history)
    key = (lambda e: -e["val_ic"]) if monitor == "ic" else (lambda e: e["val_loss"])
    assert model.best_epoch_ == min(history, key=key)["epoch"]  # the best epoch's weights are kept


def test_checkpoints_load_with_weights_only(tmp_path):
    X, y, symbols = _tiny(True)
    model = create_model("lstm", "regression", TORCH_FAST["lstm"], 1, 1, train={"epochs": 2, "batch_size": 32})
    model.set_checkpoints(tmp_path / "ck")
    model.fit(X, y, feature_names=["a", "b", "c"], symbols=symbols)
    last = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "ck" / "best.pt", weights_only=True)
    assert last["epoch"] == 2 and set(best) == set(model.net_.state_dict())


# ---- the train stage and the CLI ----------------------------------------------------------------


def _ingest(runner, recipe):
    result = runner.invoke(app, ["ingest", "--recipe", str(recipe), "-q"])
    assert result.exit_code == 0, result.output


def _run_dir(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def test_lstm_through_qfactory_train_with_cuda_fallback(runner, lstm_recipe, no_gpu):
    _ingest(runner, lstm_recipe)
    result = runner.invoke(app, ["train", "--recipe", str(lstm_recipe), "--device", "cuda"])
    run = _run_dir(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: device 'cuda' requested but CUDA is not available (no GPU, or torch was built without CUDA); "
        "training on CPU (pass --strict-device to fail instead)"
    ]
    assert len(re.findall(r"lstm epoch \d/3: train loss", result.stderr)) == 3  # per-epoch progress
    history = read_json(run / "model" / "history.json")["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3] and {"train_loss", "val_loss", "val_ic"} <= set(history[0])
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    predictions = pl.read_parquet(run / "predictions.parquet")
    assert predictions["score"].is_finite().all() and not predictions.select("symbol", "ts").is_duplicated().any()
    train = read_json(run / "metrics.json")["train"]
    # windows count every row of the symbol (excluded ones too) as history; labels only from kept training rows
    rows = (
        pl.read_parquet(run / "split" / "rows.parquet")
        .sort("symbol", "ts")
        .with_columns(pl.int_range(pl.len()).over("symbol").alias("position"))
    )
    trainable = rows.filter((pl.col("segment") == "train") & pl.col("excluded").is_null() & (pl.col("position") >= 7))
    assert train["model"] == "lstm" and train["samples"] == trainable.height < train["rows"]


def test_strict_device_without_cuda_is_one_line_exit_2(runner, lstm_recipe, no_gpu):
    result = runner.invoke(app, ["train", "--recipe", str(lstm_recipe), "--device", "cuda", "--strict-device"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: train.device 'cuda' was requested but CUDA is not available (no GPU, or torch was built without CUDA); "
        "use --device cpu or drop --strict-device"
    ]


def test_sequence_model_refuses_cross_validation_in_one_line(runner, lstm_recipe):
    result = runner.invoke(app, ["train", "--recipe", str(lstm_recipe), "--set", 'split.method="purged_kfold"'])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: split.method 'purged_kfold' is not supported with sequence model 'lstm' (windows read every past row, "
        'which per-fold preprocessing cannot provide); use split.method = "chronological"'
    ]


class Killed(Exception):
    pass


class KillAfter(CollectingReporter):
    """Dies right after epoch k's progress line (its checkpoint is written): a killed process."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def info(self, message: str) -> None:
        super().info(message)
        if message.startswith(f"lstm epoch {self.epoch}/"):
            raise Killed


def test_resume_after_a_kill_equals_an_uninterrupted_fit(runner, lstm_recipe, tmp_path):
    _ingest(runner, lstm_recipe)
    whole = _run_dir(runner.invoke(app, ["split", "--recipe", str(lstm_recipe), "-q"]))
    _run_dir(runner.invoke(app, ["train", "--run", str(whole), "-q"]))
    killed = _run_dir(runner.invoke(app, ["split", "--recipe", str(lstm_recipe), "-q"]))
    with pytest.raises(Killed):
        stages.train_existing(Run(killed), tmp_path / "data", KillAfter(2))
    assert not (killed / "model").exists() and (killed / "checkpoints" / "last.pt").is_file()
    _run_dir(runner.invoke(app, ["train", "--run", str(killed), "--resume", "-q"]))
    assert pl.read_parquet(killed / "predictions.parquet").equals(pl.read_parquet(whole / "predictions.parquet"))
    info = read_json(killed / "model" / "model.json")["fit_info"]
    assert info["resumed_from_epoch"] == 2 and info["epochs_run"] == 3


def test_resume_without_a_checkpoint_is_one_line(runner, lstm_recipe):
    _ingest(runner, lstm_recipe)
    run = _run_dir(runner.invoke(app, ["split", "--recipe", str(lstm_recipe), "-q"]))
    result = runner.invoke(app, ["train", "--run", str(run), "--resume"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: run {run.name} has no checkpoint to resume (checkpoints/last.pt "
        "is missing: only torch models write one, "
        f"after each epoch); train it afresh with `qfactory train --run {run.name}`"
    ]


def test_resume_needs_a_run(runner, lstm_recipe):
    result = runner.invoke(app, ["train", "--recipe", str(lstm_recipe), "--resume"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --resume continues a killed fit of an existing run: pass it with --run RUN, not --recipe"
    ]


# ---- mixed ensembles ------------------------------------------------------------------------------

MEMBERS = (
    '[{name = "lightgbm", symbol_encoding = "index", params = {n_estimators '
    '= 20, min_data_in_leaf = 10}}, {name = "lstm", params = {seq_len = 8, '
    "hidden = 8}}]"
)


def test_lightgbm_plus_lstm_voting_end_to_end(runner, lstm_recipe):
    _ingest(runner, lstm_recipe)
    run = _run_dir(
        runner.invoke(
            app,
            [
                "run",
                "--recipe",
                str(lstm_recipe),
                "-q",
                "--set",
                'model.name="voting"',
                "--set",
                f"model.params.members={MEMBERS}",
            ],
        )
    )
    info = read_json(run / "model" / "model.json")["fit_info"]
    assert [m["name"] for m in info["members"]] == ["lightgbm", "lstm"]
    predictions = pl.read_parquet(run / "predictions.parquet")
    assert predictions.height > 0 and predictions["score"].is_finite().all()
    assert "sharpe" in read_json(run / "metrics.json")["backtest"]


@pytest.mark.parametrize("name", ["stacking", "blending"])
def test_mixed_ensemble_scores_only_rows_every_member_scores(name):
    X, y, symbols = _tiny(True, n_sym=4)
    ts = np.tile(np.arange(48).astype("datetime64[D]").astype("datetime64[us]"), 4)
    rows = PanelRows(Panel(X, symbols, ts), np.arange(len(X)))
    members = [
        {"name": "lightgbm", "params": {"n_estimators": 10, "min_data_in_leaf": 5}},
        {"name": "lstm", "params": TORCH_FAST["lstm"]},
    ]
    params = {"members": members, **({"folds": 3} if name == "stacking" else {})}
    model = create_model(name, "regression", params, 1, 1, train={"epochs": 2, "batch_size": 32})
    assert model.uses_panel()
    model.fit(rows, y, feature_names=["a", "b", "c"], ts=ts, t1=ts + np.timedelta64(1, "D"))
    warm_up = rows.full_window(TORCH_FAST["lstm"]["seq_len"])
    scores = model.predict(rows)
    assert np.isfinite(scores[warm_up]).all() and np.isnan(scores[~warm_up]).all()
    part = pl.DataFrame({"symbol": symbols, "ts": ts, "label": y})
    frame = predict_frame(model, part, rows)
    assert frame.height == warm_up.sum()  # unscored rows are absent, not NaN


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 autocast, panel on the GPU)")
def test_cuda_fit_matches_shapes_and_records_the_device():
    X, y, symbols = _tiny(True)
    model = create_model(
        "lstm",
        "regression",
        TORCH_FAST["lstm"],
        1,
        1,
        device="cuda",
        train={"epochs": 2, "batch_size": 32, "precision": "auto"},
    )
    scores = model.fit(X, y, feature_names=["a", "b", "c"], symbols=symbols).predict(X, symbols=symbols)
    assert model.fit_info()["device"] == "cuda" and np.isfinite(scores).sum() == len(X) - 2 * 3
