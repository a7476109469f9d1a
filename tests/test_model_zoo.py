"""The model zoo's check harness (issue 19 §4): one parametrised suite over every registered torch
model. A new architecture is checked here by registering itself; the only test input it adds is
its own `fast_test` (and, if it needs them, `fast_train`) settings, declared in its file.

Each model: fit → predict → save → load → identical predictions, for every task and symbol
encoding it declares; overfits a tiny panel (training loss falls by ≥ 90%); resuming after a kill
(through the per-epoch checkpoints) equals an uninterrupted fit; the same seed on CPU gives
identical predictions; and, end to end, a bundle of a trained run scores every bar up to a cutoff
identically when every bar after the cutoff is rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch
from helpers import prices_rewritten_after

from quant_cli import stages
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import ModelError
from quant_cli.models.registry import create_model, load_model, torch_models
from quant_cli.models.torch.config import DOC, NetConfig
from quant_cli.recipe import load_recipe
from quant_cli.report import CollectingReporter
from quant_cli.serve.bundle import load

ZOO = torch_models()
NAMES = sorted(ZOO)
CASES = [(name, task, kind) for name in NAMES for task in ZOO[name].tasks for kind in ZOO[name].symbol_encodings]
FEATURES = ["a", "b", "c"]
LOOP = {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "warmup": 0.0, "patience": 0}  # the harness's short loop


def params(name: str, **extra) -> dict:
    return {**ZOO[name].fast_test, **extra}


def loop(name: str, **extra) -> dict:
    return {**LOOP, **ZOO[name].fast_train, **extra}


def warm_up(name: str) -> int:
    """Rows per symbol without a full window (not scored)."""
    return params(name).get("seq_len", 1) - 1 if ZOO[name].sequence else 0


def tiny(name: str, task: str = "regression", n_sym: int = 3, n: int = 40, seed: int = 0):
    """X (float32), y, symbols, ts: a target a model of this kind can learn from its inputs alone —
    feature a summed over the last three rows (window models) or a·b + c (row models)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_sym * n, 3)).astype(np.float32)
    symbols = np.repeat([f"S{i}" for i in range(n_sym)], n)
    ts = np.tile(np.arange(n).astype("datetime64[D]").astype("datetime64[us]"), n_sym)
    if ZOO[name].sequence:
        y = np.concatenate([np.convolve(X[i * n : (i + 1) * n, 0], np.ones(3))[:n] for i in range(n_sym)])
    else:
        y = X[:, 0] * X[:, 1] + X[:, 2]
    if task == "classification":
        y = np.where(y > 0.5, 1.0, np.where(y < -0.5, -1.0, 0.0))
    return X, y.astype(np.float64), symbols, ts


def fit(
    name,
    task="regression",
    kind="none",
    seed=1,
    train=None,
    model_params=None,
    checkpoints=None,
    resume=False,
    reporter=None,
    data=None,
):
    X, y, symbols, ts = data if data is not None else tiny(name, task)
    model = create_model(
        name,
        task,
        model_params or params(name),
        seed,
        1,
        symbol_encoding=kind,
        train=train or loop(name),
        **({"reporter": reporter} if reporter else {}),
    )
    if checkpoints is not None:
        model.set_checkpoints(checkpoints, resume)
    return model.fit(X, y, feature_names=FEATURES, symbols=symbols, ts=ts)


# ---- declared once ---------------------------------------------------------------------------------


def test_every_torch_model_is_declared_once_in_its_own_file():
    assert {"mlp", "lstm", "gru", "tcn", "transformer"} <= set(ZOO)
    for name, cls in ZOO.items():
        assert cls.__module__.startswith("quant_cli.models.torch."), name  # its file under models/torch/
        assert issubclass(cls.config, NetConfig) and cls.network.__module__ == cls.__module__, name
        declared = [f.name for f in dataclasses.fields(cls.config) if DOC in f.metadata]
        assert list(cls.defaults) == declared and set(cls.docs) == set(declared), name  # params are the config's fields
        assert all(cls.docs[key] for key in declared), f"{name}: every parameter has a one-line doc"
        assert set(cls.fast_test) <= set(cls.defaults), f"{name}: fast_test names only parameters"
        create_model(name, cls.tasks[0], params(name), 1, 1)  # the fast settings are valid
    assert ZOO["lstm"].config is ZOO["gru"].config and ZOO["lstm"].network is ZOO["gru"].network  # one recurrent net


@pytest.mark.parametrize("name", [n for n in NAMES if ZOO[n].sequence])
def test_window_models_declare_their_flags(name):
    cls = ZOO[name]
    assert not cls.tabular and cls.gpu and cls.early_stopping and "seq_len" in cls.defaults and "inputs" in cls.defaults
    if name in ("lstm", "gru", "tcn", "transformer"):  # what these four have promised since issue 10
        assert cls.bar_channels and set(cls.symbol_encodings) == {"none", "one_hot", "index", "embedding"}


# ---- fit → predict → save → load, every task and encoding ------------------------------------------


@pytest.mark.parametrize("name,task,kind", CASES)
def test_fit_predict_save_load_identical(name, task, kind, tmp_path):
    X, y, symbols, ts = tiny(name, task)
    model = create_model(name, task, params(name), 1, 1, symbol_encoding=kind, train=loop(name))
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(X, symbols=symbols)
    model.fit(X, y, feature_names=FEATURES, symbols=symbols, ts=ts)
    scores = model.predict(X, symbols=symbols)
    scored = np.isfinite(scores)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    assert (~scored).sum() == 3 * warm_up(name)  # only a window's warm-up is unscored
    assert model.predict(X[:0], symbols=symbols[:0]).shape == (0,)
    json.dumps(model.fit_info())  # recordable in metrics.json
    if kind != "none":  # the symbol reaches the network
        assert not np.allclose(model.predict(X, symbols=np.roll(symbols, len(X) // 3))[scored], scores[scored])
    if task == "classification":
        proba = model.predict_proba(X, symbols=symbols)
        assert proba.shape == (len(X), 3) and np.abs(proba[scored].sum(axis=1) - 1).max() <= 1e-12
        np.testing.assert_allclose(scores, proba @ model.classes_.astype(float))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config_ == model.config_
    np.testing.assert_array_equal(loaded.predict(X, symbols=symbols), scores)
    if task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(X, symbols=symbols), model.predict_proba(X, symbols=symbols))


# ---- learning, reproducibility, resume -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_tiny_panel(name):
    model = fit(
        name,
        data=tiny(name, n_sym=2, n=48),
        model_params=params(name, dropout=0.0),
        train=loop(name, epochs=120, schedule="constant"),
    )
    losses = [epoch["train_loss"] for epoch in model.history_]
    assert losses[-1] <= 0.1 * losses[0], f"{name}: training loss fell only from {losses[0]:.4f} to {losses[-1]:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_on_cpu_gives_identical_predictions(name):
    X, _, symbols, _ = data = tiny(name)
    first, second = (fit(name, seed=7, data=data).predict(X, symbols=symbols) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, fit(name, seed=8, data=data).predict(X, symbols=symbols), equal_nan=True)


class Killed(Exception):
    pass


class KillAfter(CollectingReporter):
    """Dies right after epoch k's progress line, when its checkpoint is written: a killed process."""

    def __init__(self, name: str, epoch: int) -> None:
        super().__init__()
        self.prefix = f"{name} epoch {epoch}/"

    def info(self, message: str) -> None:
        super().info(message)
        if message.startswith(self.prefix):
            raise Killed


@pytest.mark.parametrize("name", NAMES)
def test_resume_after_a_kill_equals_an_uninterrupted_fit(name, tmp_path):
    X, _, symbols, _ = data = tiny(name)
    train = loop(name, epochs=3)
    whole = fit(name, train=train, data=data, checkpoints=tmp_path / "whole")
    with pytest.raises(Killed):
        fit(name, train=train, data=data, checkpoints=tmp_path / "killed", reporter=KillAfter(name, 2))
    assert (tmp_path / "killed" / "last.pt").is_file()
    resumed = fit(name, train=train, data=data, checkpoints=tmp_path / "killed", resume=True)
    assert resumed.resumed_from_ == 2 and resumed.epochs_run_ == 3
    np.testing.assert_array_equal(resumed.predict(X, symbols=symbols), whole.predict(X, symbols=symbols))
    for key, value in whole.net_.state_dict().items():
        assert torch.equal(value, resumed.net_.state_dict()[key]), f"{name}: weight {key} differs after resuming"


# ---- causality end to end: a bundle of a trained run ---------------------------------------------

CUTOFF = dt.datetime(2015, 8, 3, tzinfo=dt.timezone.utc)
# short exact feature warm-ups keep the bundle's lookback (and its measurement) small
RUN = [
    'data.dataset="p"',
    "features.sets=[]",
    'features.include=["ret_5", "ret_10"]',
    "label.horizon=2",
    "train.threads=1",
    "train.early_stopping=0",
    "train.epochs=2",
    "train.batch_size=64",
    "train.patience=0",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("zoo") / "data"
    write_store(data_dir, "p", generate(symbols=3, bars=200, seed=3), "test")
    return data_dir


def _recipe_sets(name: str) -> list[str]:
    sets = [f'model.name="{name}"', *(f"model.params.{k}={json.dumps(v)}" for k, v in ZOO[name].fast_test.items())]
    if ZOO[name].bar_channels:
        sets.append('model.params.inputs="both"')  # the raw-bar channels must be causal too
    return [*sets, *(f"train.{k}={json.dumps(v)}" for k, v in ZOO[name].fast_train.items())]


@pytest.mark.parametrize("name", NAMES)
def test_bundle_scores_up_to_a_cutoff_ignore_every_later_bar(name, store, tmp_path):
    recipe = load_recipe(None, [*RUN, *_recipe_sets(name)])
    run = stages.train_new(recipe, store, tmp_path / "runs").run
    bundle = load(stages.bundle_existing(run, store).bundle)
    bars = load_bars(store, "p").with_columns(pl.col("symbol").cast(pl.String))
    before = bundle.score_bars(bars, every_bar=True)
    after = bundle.score_bars(prices_rewritten_after(bars, CUTOFF, seed=1), every_bar=True)
    joined = before.join(after, on=["symbol", "ts"], suffix="_rewritten")
    assert joined.height == before.height == after.height > 0
    early = joined.filter(pl.col("ts") <= CUTOFF)
    assert early.height > 0 and (early["score"] == early["score_rewritten"]).all(), (
        f"{name}: a score at or before the cutoff changed when later bars were rewritten"
    )
    late = joined.filter(pl.col("ts") > CUTOFF)
    assert (late["score"] != late["score_rewritten"]).any()  # the rewrite does reach later scores
