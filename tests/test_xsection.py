"""xsection, the cross-sectional model (issue 19 §3): its timestamp sampler, nothing crossing time,
the padding mask, and what a bundle does with a single-symbol request. The zoo harness
(tests/test_model_zoo.py) runs it through fit → predict → save → load, overfitting, resume,
determinism and bundle causality like every torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import ModelError
from quant_cli.models.panel import Panel, PanelRows
from quant_cli.models.registry import create_model, model_class
from quant_cli.models.torch.windows import Samples
from quant_cli.recipe import load_recipe

FAST = model_class("xsection").fast_test
LOOP = {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "warmup": 0.0, "patience": 0}


def panel(n_sym: int = 4, n: int = 30, seed: int = 0, gaps: int = 3) -> Panel:
    """n_sym symbols x n daily rows; the last symbol lacks `gaps` timestamps in the middle (absent at those t)."""
    rng = np.random.default_rng(seed)
    days = np.arange(n).astype("datetime64[D]").astype("datetime64[us]")
    parts = [(f"S{i}", days if i < n_sym - 1 else np.delete(days, range(12, 12 + gaps))) for i in range(n_sym)]
    symbols = np.concatenate([[s] * len(d) for s, d in parts])
    ts = np.concatenate([d for _, d in parts])
    return Panel(rng.normal(size=(len(ts), 3)).astype(np.float32), symbols, ts)


def fitted(data: Panel, seed: int = 1, **train):
    rows = PanelRows(data, np.arange(len(data)))
    y = np.convolve(data.values[:, 0], np.ones(3))[: len(data)] + 0.5 * data.values[:, 1]  # learnable from windows
    model = create_model("xsection", "regression", FAST, seed, 1, train={**LOOP, **train})
    return model.fit(rows, y, feature_names=["a", "b", "c"])


def scores(model, data: Panel, rows: np.ndarray | None = None) -> np.ndarray:
    return model.predict(PanelRows(data, np.arange(len(data)) if rows is None else rows))


def rewritten(data: Panel, where: np.ndarray, seed: int = 9) -> Panel:
    values = data.values.copy()
    values[where] = np.random.default_rng(seed).normal(size=(int(where.sum()), values.shape[1]))
    return Panel(values, data.symbols, data.ts)


# ---- the sampler: whole timestamps, shuffled -------------------------------------------------------


def samples(group: np.ndarray, cross_section: bool = True) -> Samples:
    n = len(group)
    return Samples(torch.zeros(n, 1), torch.arange(n), 0, group=torch.as_tensor(group), cross_section=cross_section)


def test_batches_are_whole_timestamps_shuffled_by_the_generator():
    group = np.repeat(np.arange(20), 5)[np.random.default_rng(0).permutation(100)]  # 20 timestamps x 5 symbols
    group[group == 7] = 8  # one timestamp of 10 symbols: the widest decides how many fit a batch
    data = samples(group)
    first = data.batches(32, torch.Generator().manual_seed(1))
    assert len(first) == data.n_batches(32) == 7  # 19 timestamps, 3 per batch (32 // 10)
    assert sorted(torch.cat(first).tolist()) == list(range(100))  # every sample once per pass
    for idx in first:
        inside = set(group[idx.numpy()].tolist())
        assert 1 <= len(inside) <= 3 and len(idx) <= 32
        assert len(idx) == np.isin(group, list(inside)).sum()  # every sample of each of its timestamps
    again = data.batches(32, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the (seed, epoch) generator decides
    other = data.batches(32, torch.Generator().manual_seed(2))
    assert [set(group[i.numpy()]) for i in first] != [set(group[i.numpy()]) for i in other]
    in_order = group[torch.cat(data.batches(32)).numpy()]  # scoring: timestamps in time order
    assert (np.diff(in_order) >= 0).all() and sorted(set(group[data.batches(32)[0].numpy()])) == [0, 1, 2]
    assert len(data.batches(4)) == 19  # a timestamp wider than the batch still comes whole, alone


def test_rows_batches_are_unchanged_for_every_other_model():
    data = samples(np.arange(50) % 7, cross_section=False)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3)).split(16)
    got = data.batches(16, torch.Generator().manual_seed(3))
    assert data.n_batches(16) == 4 and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert data.context(torch.arange(3), "cpu") == {}


# ---- nothing crosses time ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    data = panel()
    return data, fitted(data)


def test_rewriting_every_bar_after_t_leaves_every_score_up_to_t_unchanged(trained):
    data, model = trained
    base = scores(model, data)
    for cut in (np.datetime64("1970-01-10"), np.datetime64("1970-01-20")):
        later = data.ts > cut
        moved = scores(model, rewritten(data, later))
        np.testing.assert_array_equal(moved[~later], base[~later])  # one inference batch holds every timestamp
        assert not np.allclose(moved[later & np.isfinite(base)], base[later & np.isfinite(base)])


def test_one_symbols_bar_at_a_later_time_changes_no_earlier_score_but_its_peers_at_that_time(trained):
    data, model = trained
    base = scores(model, data)
    t_later = np.datetime64("1970-01-18")
    one = (data.symbols == "S1") & (data.ts == t_later)
    moved = scores(model, rewritten(data, one))
    before = data.ts < t_later
    np.testing.assert_array_equal(moved[before], base[before])
    peers = (data.ts == t_later) & (data.symbols != "S1")
    assert (moved[peers] != base[peers]).all()  # the cross-section: S1's bar at t reaches every symbol's score at t


def test_a_scores_cross_section_is_its_own_timestamp_whatever_shares_the_batch(trained):
    data, model = trained
    base = scores(model, data)
    for day in ("1970-01-13", "1970-01-25"):  # S3 absent at the 13th: its padded slot is masked
        at = np.flatnonzero(data.ts == np.datetime64(day))
        alone = scores(model, data, at)
        np.testing.assert_allclose(alone, base[at], rtol=1e-6, atol=1e-7)
    order = np.random.default_rng(4).permutation(len(data))  # rows in any order: the same scores (to float sums)
    np.testing.assert_allclose(scores(model, data, order), base[order], rtol=1e-5, atol=1e-6)


def test_the_cross_section_is_the_rows_scored_together(trained):
    data, model = trained
    at = np.flatnonzero(data.ts == np.datetime64("1970-01-25"))
    full, three = scores(model, data, at), scores(model, data, at[:3])
    assert not np.allclose(three, full[:3])  # without S3 the others' scores move: they attend to it


def test_same_seed_same_scores_and_mixed_timestamp_batches_train(trained):
    data, model = trained
    again = fitted(data)
    np.testing.assert_array_equal(scores(again, data), scores(model, data))
    assert np.isfinite(model.history_[-1]["train_loss"]) and model.samples_ == len(data) - 4 * 3


# ---- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,train,message",
    [
        (
            {"hidden": 10, "heads": 4},
            {},
            "model 'xsection': model.params.heads 4 must divide model.params.hidden 10; change one of them",
        ),
        (
            {},
            {"loss": "pnl"},
            "train.loss 'pnl' scores each symbol's previous window alone, but model 'xsection' scores a symbol "
            "only within its timestamp's cross-section; use train.loss = 'mse', 'huber' or 'sharpe'",
        ),
    ],
)
def test_refused_settings_are_one_line(params, train, message):
    with pytest.raises(ModelError) as caught:
        create_model("xsection", "regression", params, 1, 1, train=train)
    assert str(caught.value) == message


def test_the_recipe_refuses_bad_heads_with_one_line_exit_2_before_any_work(runner, tmp_path):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "xsection.toml")
    dirs = ["--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, ["train", "--recipe", recipe, "--set", "model.params.heads=5", *dirs])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: model 'xsection': model.params.heads 5 must divide model.params.hidden 32; change one of them"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_data_parallel_training_is_refused_with_one_line_before_any_work(runner, tmp_path):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "xsection.toml")
    dirs = ["--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, ["train", "--recipe", recipe, "--nproc", "2", *dirs])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: train.nproc 2: model 'xsection' attends across the symbols of each timestamp, which a data-parallel "
        "share of a batch would split; drop --nproc or set train.nproc = 1"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_the_sharpe_loss_trains_on_whole_timestamps():
    data = panel(gaps=0)
    model = fitted(data, loss="sharpe")
    assert np.isfinite(scores(model, data)).sum() == len(data) - 4 * 3


# ---- a bundle: the request's symbols are the cross-section ------------------------------------------

RUN = [
    'data.dataset="p"',
    "features.sets=[]",
    'features.include=["ret_5", "ret_10"]',
    "label.horizon=2",
    "train.threads=1",
    "train.early_stopping=0",
    "train.epochs=1",
    'model.name="xsection"',
    *(f"model.params.{k}={json.dumps(v)}" for k, v in FAST.items()),
]


@pytest.fixture(scope="module")
def xs_run(tmp_path_factory):
    """(store, run) of a tiny trained xsection run on 3 synthetic symbols."""
    root = tmp_path_factory.mktemp("xsrun")
    write_store(root / "data", "p", generate(symbols=3, bars=120, seed=3), "test")
    return root / "data", stages.train_new(load_recipe(None, RUN), root / "data", root / "runs").run


def test_a_single_symbol_request_is_refused_with_one_line(runner, tmp_path, xs_run):
    store, run = xs_run
    bundle = stages.bundle_existing(run, store).bundle
    bars = load_bars(store, "p").with_columns(pl.col("symbol").cast(pl.String))
    bars.write_csv(tmp_path / "all.csv")
    bars.filter(pl.col("symbol") == "S001").write_csv(tmp_path / "one.csv")
    args = ["predict", "--bundle", str(bundle), "--out"]
    good = runner.invoke(app, [*args, str(tmp_path / "all.parquet"), "--source", str(tmp_path / "all.csv")])
    assert good.exit_code == 0, good.output
    assert pl.read_parquet(tmp_path / "all.parquet").height == 3  # each symbol's latest bar, scored together
    refused = runner.invoke(app, [*args, str(tmp_path / "one.parquet"), "--source", str(tmp_path / "one.csv")])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        "error: model 'xsection' scores each symbol against the other symbols at the same timestamp "
        "(flag cross_section), but the request holds only symbol 'S001'; send the bars of every symbol to "
        "score together (at least 2)"
    )
    assert not (tmp_path / "one.parquet").exists()


def test_ppo_fine_tuning_is_refused_with_one_line(runner, tmp_path, xs_run):
    store, run = xs_run
    dirs = ["--data-dir", str(store), "--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, ["finetune", "--run", str(run.path), "--method", "ppo", *dirs])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: run {run.id}'s model 'xsection' scores each symbol within its timestamp's cross-section "
        "(flag cross_section), but PPO trades each symbol's windows alone; fine-tune a per-symbol model "
        "(e.g. lstm, gru, tcn, transformer)"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
