"""Issue 20 §2: `qfactory pretrain` (masked / contrastive) and `qfactory train --init` (warm start)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers import TORCH_FAST

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.models.registry import model_class
from quant_cli.models.torch import pretrain as objectives

RECIPE = """
[run]
name = "pre"
seed = 5
[data]
dataset = "{dataset}"
[features]
sets = ["core"]
windows = [5]
[model]
name = "lstm"
[model.params]
seq_len = 6
hidden = 8
[train]
threads = 1
epochs = 2
batch_size = 64
[pretrain]
epochs = 2
batch_size = 64
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    """A data home with dataset 'a' (3 symbols x 160 bars); returns (home, its bars)."""
    root = tmp_path_factory.mktemp("pretrain")
    bars = generate(symbols=3, bars=160, seed=2)
    write_store(root / "data", "a", bars, "test")
    return root, bars


def _recipe(tmp_path: Path, dataset: str = "a", extra: str = "") -> Path:
    path = tmp_path / f"{dataset}.toml"
    path.write_text(RECIPE.format(dataset=dataset) + extra)
    return path


def _invoke(runner, store_root: Path, tmp_path: Path, *args: str):
    homes = ["--data-dir", str(store_root / "data"), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    return runner.invoke(app, [*args, *homes])


def _pretrain(runner, store_root, tmp_path, recipe: Path, *sets: str) -> Path:
    args = [a for s in sets for a in ("--set", s)]
    result = _invoke(runner, store_root, tmp_path, "pretrain", "--recipe", str(recipe), *args)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def _encoder(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "pretrain" / "encoder.pt", weights_only=True)


# ---- the objectives -------------------------------------------------------------------------------


def test_patch_mask_masks_whole_patches_ending_at_the_last_step() -> None:
    torch.manual_seed(0)
    mask = objectives.patch_mask(batch=64, length=10, patch_len=4, ratio=0.4, device="cpu")  # patches: 2 | 4 | 4
    assert mask.shape == (64, 10)
    spans = [(0, 2), (2, 6), (6, 10)]
    for row in mask:
        assert all(row[a:b].all() or not row[a:b].any() for a, b in spans)  # whole patches only
        assert sum(bool(row[a]) for a, _ in spans) == 1  # round(0.4 x 3) = 1 patch, never none
    assert mask[:, 6:].any() and mask[:, :2].any()  # each patch gets drawn


def test_the_masked_loss_reads_only_the_masked_steps() -> None:
    """Each window's loss is the squared reconstruction error averaged over its masked steps; the
    unmasked steps' errors do not enter (recomputed here from the same draw)."""
    net = model_class("lstm").network(model_class("lstm").config(n_inputs=3, seq_len=8, hidden=4))
    cfg = objectives.PretrainConfig(mask_ratio=0.5, patch_len=2, mask_value="zero")
    masked = objectives.Masked(net, cfg, n_inputs=3, seq_len=8)
    x = torch.randn(5, 8, 3)
    torch.manual_seed(1)
    loss = masked(x)[:, 0]
    torch.manual_seed(1)
    mask = objectives.patch_mask(5, 8, 2, 0.5, "cpu")
    error = (masked.reconstruct(net.encode(torch.where(mask[:, :, None], 0.0, x))) - x).square().mean(2)
    assert torch.allclose(loss, (error * mask).sum(1) / mask.sum(1))
    assert not torch.allclose(loss, error.mean(1))


def test_the_contrastive_loss_is_low_for_matching_views_and_high_for_mismatched_ones() -> None:
    z = torch.eye(8)[None].repeat(4, 1, 1)[:, :, :8] * 5.0  # 4 windows, 8 steps, distinct one-hot states
    z = z + torch.arange(4.0)[:, None, None] * torch.ones(8)  # windows differ too
    same = objectives.hierarchical_loss(z, z.clone(), 0.5, 1.0)
    shuffled = objectives.hierarchical_loss(z, z.flip(1).flip(0), 0.5, 1.0)
    assert same.shape == (4,) and (same < shuffled).all()


def test_every_model_with_per_step_states_is_supported_and_others_are_not() -> None:
    from quant_cli.stages.pretrain import supported_models

    assert {"lstm", "gru", "tcn", "transformer", "state_space", "moe_transformer"} <= set(supported_models())
    assert "patchtst" not in supported_models() and "mlp" not in supported_models()
    for name in supported_models():  # encode is the forward's own states: the last step feeds the head
        cls = model_class(name)
        net = cls.network(cls.config(n_inputs=3, **TORCH_FAST[name])).eval()
        x = torch.randn(2, TORCH_FAST[name]["seq_len"], 3)
        assert net.encode(x).shape[:2] == x.shape[:2], name
        later = x.clone()
        later[:, -1] += 1.0  # the last step changes: every earlier state stays (causal)
        assert torch.allclose(net.encode(x)[:, :-1], net.encode(later)[:, :-1], atol=1e-5), name


@pytest.mark.parametrize("objective", ["masked", "contrastive"])
def test_both_objectives_train_every_supported_model(objective: str) -> None:
    """A finite per-window loss (B, 1) with gradients into the encoder, even for one-step crops."""
    from quant_cli.stages.pretrain import supported_models

    for name in supported_models():
        cls = model_class(name)
        torch.manual_seed(0)
        net = cls.network(cls.config(n_inputs=3, **TORCH_FAST[name], **cls.fixed))
        seq_len = TORCH_FAST[name]["seq_len"]
        names = objectives.encoder_names(net, 3, seq_len)  # a probe forward; it leaves no gradient behind
        wrapped = objectives.objective(net, objectives.PretrainConfig(objective=objective, crop=0.05), 3, seq_len)
        out = wrapped(torch.randn(4, seq_len, 3))
        out.mean().backward()
        assert out.shape == (4, 1) and torch.isfinite(out).all(), name
        grads = dict(net.named_parameters())
        assert names and all(grads[n].grad is not None for n in names if n in grads), name
        assert not any(n.startswith("head.") for n in names), name


# ---- the pretrain run ------------------------------------------------------------------------------


def test_pretrain_writes_a_pretrain_run_listed_by_runs_ls(runner, store, tmp_path) -> None:
    root, _ = store
    run = _pretrain(runner, root, tmp_path, _recipe(tmp_path), "pretrain.objective=contrastive")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "pretrain" and manifest["pretrain"] == {
        "segments": ["train"],
        "objective": "contrastive",
    }
    assert manifest["stages"]["pretrain"]["status"] == "done" and (run / "split" / "pipeline.json").is_file()
    meta = json.loads((run / "pretrain" / "pretrain.json").read_text())
    assert (
        set(_encoder(run))
        == set(meta["tensors"])
        == {f"rnn.{w}_l0" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    )
    history = json.loads((run / "pretrain" / "history.json").read_text())["epochs"]
    assert len(history) == 2 and all(np.isfinite(e["train_loss"]) and e["grad_norm"] > 0 for e in history)
    listed = runner.invoke(app, ["runs", "ls", "--json", "--runs-dir", str(tmp_path / "runs")])
    (row,) = json.loads(listed.stdout)
    assert row["kind"] == "pretrain" and row["model"] == "lstm" and row["committed"] == ["split", "pretrain"]
    assert row["state"] == "ok"


def test_pretraining_never_reads_a_bar_after_the_training_segment(runner, store, tmp_path) -> None:
    """Rewriting every bar after the training segment's end leaves the pretrained weights identical;
    pretraining on validation too (pretrain.segments) does see them, so the check can fail."""
    root, bars = store
    first = _pretrain(runner, root, tmp_path, _recipe(tmp_path))
    end = json.loads((first / "split" / "boundaries.json").read_text())["segments"]["train"]["end"]
    after = pl.col("ts") > pl.lit(end).str.to_datetime(time_zone="UTC")
    factor = pl.Series(np.exp(np.random.default_rng(9).normal(0, 0.05, bars.height)))
    rewritten = bars.with_columns(
        [
            pl.when(after).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ]
    )
    assert not rewritten.equals(bars)
    write_store(root / "data", "b", rewritten, "test")
    second = _pretrain(runner, root, tmp_path, _recipe(tmp_path, "b"))
    a, b = _encoder(first), _encoder(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    both = '["train", "validation"]'
    wide_a = _pretrain(runner, root, tmp_path, _recipe(tmp_path), f"pretrain.segments={both}")
    wide_b = _pretrain(runner, root, tmp_path, _recipe(tmp_path, "b"), f"pretrain.segments={both}")
    assert json.loads((wide_a / "manifest.json").read_text())["pretrain"]["segments"] == ["train", "validation"]
    assert not all(torch.equal(_encoder(wide_a)[k], _encoder(wide_b)[k]) for k in a)


def test_pretrain_refuses_a_model_without_an_encoder(runner, store, tmp_path) -> None:
    root, _ = store
    result = _invoke(runner, root, tmp_path, "pretrain", "--recipe", str(_recipe(tmp_path)), "--model", "mlp")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: pretrain: model 'mlp' has no per-step encoder to pretrain; use one of "
        "gru, lstm, moe_transformer, state_space, tcn, transformer"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_pretrain_refuses_segments_without_train(runner, store, tmp_path) -> None:
    root, _ = store
    recipe = _recipe(tmp_path)
    result = _invoke(
        runner, root, tmp_path, "pretrain", "--recipe", str(recipe), "--set", 'pretrain.segments=["validation"]'
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: pretrain.segments ['validation']: must include 'train' (add \"train\"; never test)"
    )
    result = _invoke(runner, root, tmp_path, "pretrain", "--recipe", str(recipe), "--set", 'pretrain.segments=["test"]')
    assert (
        result.exit_code == 2
        and "'pretrain.segments' must be one of 'train', 'validation', got 'test'" in result.output
    )


# ---- train --init -----------------------------------------------------------------------------------


def test_train_init_warm_starts_every_encoder_tensor_and_records_it(runner, store, tmp_path) -> None:
    """With a learning rate of ~0 the trained encoder is the pretrained one: the tensors were loaded."""
    root, _ = store
    recipe = _recipe(tmp_path)
    pre = _pretrain(runner, root, tmp_path, recipe)
    frozen = ["--set", "train.learning_rate=1e-12", "--set", "train.epochs=1"]
    result = _invoke(runner, root, tmp_path, "train", "--recipe", str(recipe), "--init", pre.name, *frozen)
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    manifest = json.loads((run / "manifest.json").read_text())
    encoder = _encoder(pre)
    assert manifest["initialised_from"] == {"run": pre.name, "tensors": list(encoder)}
    trained = torch.load(run / "model" / "weights.pt", weights_only=True)
    assert all(torch.allclose(trained[k], encoder[k], atol=1e-6) for k in encoder)
    scratch = _invoke(runner, root, tmp_path, "train", "--recipe", str(recipe), *frozen)
    scratch_manifest = json.loads((Path(scratch.stdout.strip()) / "manifest.json").read_text())
    assert "initialised_from" not in scratch_manifest
    # the trial ledger counts a warm start and a scratch fit of one recipe as two experiments
    assert scratch_manifest["fingerprints"]["experiment"] != manifest["fingerprints"]["experiment"]
    weights = torch.load(Path(scratch.stdout.strip()) / "model" / "weights.pt", weights_only=True)
    assert not all(torch.allclose(weights[k], encoder[k], atol=1e-6) for k in encoder)


def test_train_init_refuses_what_does_not_match_in_one_line(runner, store, tmp_path) -> None:
    root, _ = store
    recipe = _recipe(tmp_path)
    pre = _pretrain(runner, root, tmp_path, recipe)
    cases = {
        ("--model", "gru"): f"error: --init {pre.name}: pretrained model 'lstm' but the recipe trains 'gru'; "
        "set model.name = \"lstm\" or pretrain a 'gru'",
        ("--set", "model.params.hidden=4"): f"error: --init {pre.name}: tensor 'rnn.weight_ih_l0' is (32, 12) in "
        "the pretrain run but (16, 12) here (model.params differ: hidden 8 vs 4); use the pretrain run's model.params",
        ("--set", "features.windows=[10]"): f"error: --init {pre.name}: pretrained on other features ('ret_5' vs "
        "'ret_10', pretrain run vs this run); use the pretrain run's [features] section",
        ("--set", 'preprocess.scaler="robust"'): f"error: --init {pre.name}: pretrained with preprocess "
        "{'scaler': 'zscore', 'clip': 5.0, 'fill': 'zero'} but this run has {'scaler': 'robust', 'clip': 5.0, "
        "'fill': 'zero'}; use the pretrain run's [preprocess]",
        ("--model", "lightgbm"): "error: --init warm-starts a pretrained encoder; model 'lightgbm' has none (use one "
        "of gru, lstm, moe_transformer, state_space, tcn, transformer)",
    }
    for option, line in cases.items():
        result = _invoke(runner, root, tmp_path, "train", "--recipe", str(recipe), "--init", pre.name, *option)
        assert result.exit_code == 2, (option, result.output)
        assert result.output.strip() == line, option
    trained = _invoke(runner, root, tmp_path, "train", "--recipe", str(recipe))
    not_pre = Path(trained.stdout.strip()).name
    result = _invoke(runner, root, tmp_path, "train", "--recipe", str(recipe), "--init", not_pre)
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: --init {not_pre}: not a pretrain run (made by `qfactory train`, not `qfactory pretrain`); "
        "pass a run made by `qfactory pretrain --recipe R`"
    )
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert runs == sorted([pre.name, not_pre])  # no refused command left a run behind


def test_export_mlflow_carries_the_pretrain_loss_history(runner, store, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    root, _ = store
    run = _pretrain(runner, root, tmp_path, _recipe(tmp_path))
    history = json.loads((run / "pretrain" / "history.json").read_text())["epochs"]
    uri = (tmp_path / "mlruns").as_uri()
    result = runner.invoke(app, ["runs", "export-mlflow", str(run), "--tracking-uri", uri, "--json"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("qfactory").experiment_id])
    for key in ("train_loss", "grad_norm", "lr"):
        points = sorted(client.get_metric_history(logged.info.run_id, f"pretrain.epoch.{key}"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in points] == [(h["epoch"], pytest.approx(h[key])) for h in history], key


def test_recipe_defaults_show_every_pretrain_key(runner) -> None:
    from quant_cli.schema import SCHEMA

    text = runner.invoke(app, ["recipe", "defaults"]).stdout
    section = text.split("[pretrain]\n", 1)[1].split("\n[", 1)[0]
    assert all(f"\n{key} = " in f"\n{section}" for key in SCHEMA["pretrain"]), section


def test_init_applies_to_new_runs_only(runner, tmp_path) -> None:
    result = runner.invoke(app, ["train", "--run", "latest", "--init", "latest"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --init warm-starts a new run: pass it with --recipe R, not --run"
