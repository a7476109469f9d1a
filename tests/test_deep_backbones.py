"""The issue-20 backbones beyond the registry-wide harness (tests/test_model_zoo.py): the hybrid's
causal patches and its receptive-field check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quant_cli.cli import app
from quant_cli.errors import ModelError
from quant_cli.models.registry import create_model
from quant_cli.models.torch.hybrid import Hybrid, HybridConfig, PatchEmbed, conv_receptive_field

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_hybrid_patches_end_at_the_row_scored_and_never_look_ahead():
    torch.manual_seed(0)
    embed = PatchEmbed(n_inputs=2, patch_len=3, width=4)
    x = torch.randn(1, 10, 2)  # 10 steps, patches of 3: one zero-padded step at the oldest end, 4 tokens
    tokens = embed(x)
    assert tokens.shape == (1, 4, 4)
    later = x.clone()
    later[:, 7:] = torch.randn(1, 3, 2)  # rewrite the last patch (steps 7..9) only
    torch.testing.assert_close(embed(later)[:, :3], tokens[:, :3], rtol=0, atol=0)
    net = Hybrid(HybridConfig(n_inputs=2, seq_len=10, patch_len=3, d_model=8, heads=2, layers=2, kernel_size=2,
                              state=4, dropout=0.0)).eval()
    # every stage after the patches is causal over tokens: the first three tokens' outputs ignore the last patch
    original, rewritten = net.embed(x), net.embed(later)  # (1, 4, 8) each
    for block in net.blocks:
        original, rewritten = block(original), block(rewritten)
    torch.testing.assert_close(rewritten[:, :3], original[:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(rewritten[:, 3], original[:, 3])


def test_hybrid_receptive_field_is_checked_against_seq_len():
    with pytest.raises(ModelError, match=r"model 'hybrid': a convolution with dilation 2 and kernel_size 3 reaches 4 "
                                         r"tokens back, past the 4 tokens of seq_len 8 \(patch_len 2\)"):
        create_model("hybrid", "regression", {"seq_len": 8, "patch_len": 2, "layers": 2, "kernel_size": 3}, 1, 1)
    create_model("hybrid", "regression", {"seq_len": 10, "patch_len": 2, "layers": 2, "kernel_size": 3}, 1, 1)
    assert conv_receptive_field(patch_len=4, kernel_size=3, layers=3, cycle=3) == 4 * (1 + 2 * (1 + 2 + 4))


def test_hybrid_refusal_is_one_line_exit_2_before_any_work(runner, tmp_path):
    result = runner.invoke(app, ["train", "--recipe", str(RECIPES / "hybrid.toml"), "--set", "model.params.seq_len=16",
                                 "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: model 'hybrid': a convolution with dilation 4 and kernel_size 3 reaches 8 tokens back, past the 4 "
        "tokens of seq_len 16 (patch_len 4), so its taps would read only padding; lower model.params.dilation_cycle, "
        "kernel_size or patch_len, or raise seq_len"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


# ---- moe_transformer: routing, capacity, the loop's hooks --------------------------------------------


def _moe(**extra):
    from quant_cli.models.torch.moe_transformer import MoETransformer, MoETransformerConfig

    cfg = dict(n_inputs=3, seq_len=8, d_model=8, heads=2, layers=2, experts=4, top_k=2, dropout=0.0)
    return MoETransformer(MoETransformerConfig(**{**cfg, **extra}))


def test_moe_scoring_ignores_the_other_rows_of_its_batch_and_training_capacity_drops_overflow():
    torch.manual_seed(0)
    net, x = _moe(capacity_factor=0.3), torch.randn(16, 8, 3)
    net.eval()  # scoring: no capacity, so one window's score never depends on another window in the batch
    torch.testing.assert_close(net(x)[:1], net(x[:1]), rtol=0, atol=1e-6)
    net.train()  # training: a capacity below an even share drops assignments, so the batch does matter
    assert not torch.allclose(net(x)[:1], net(x[:1]))
    stats = net.epoch_stats()
    assert len(stats["expert_usage"]) == 2 and all(0 < d < 1 for d in stats["expert_dropped"])
    assert all(abs(sum(usage) - 1) < 1e-5 and len(usage) == 4 for usage in stats["expert_usage"])
    assert net.epoch_stats()["expert_dropped"] == [0.0, 0.0]  # counters reset each epoch
    net(x)
    # Σ over layers of aux_weight·E·Σ f·P, which is ≥ aux_weight per layer
    assert float(net.auxiliary_loss().detach()) >= 2 * 0.01 * 0.999
    generous = _moe(capacity_factor=8.0).train()
    generous(x)
    assert generous.epoch_stats()["expert_dropped"] == [0.0, 0.0]


def test_history_carries_telemetry_and_expert_usage_per_epoch():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 3)).astype(np.float32)
    symbols = np.repeat(["A", "B"], 48)
    train = {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "warmup": 0.0, "grad_clip": 1e-4}
    params = {"seq_len": 4, "d_model": 8, "heads": 2, "layers": 2, "experts": 3, "top_k": 2}
    model = create_model("moe_transformer", "regression", params, 1, 1, train=train)
    history = model.fit(X, X[:, 0].astype(float), feature_names=["a", "b", "c"], symbols=symbols).history_
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        assert h["grad_norm_max"] >= h["grad_norm"] > 1e-4  # before clipping (the clip is 1e-4)
        assert h["param_norm"] > 0 and h["lr"] > 0 and h["aux_loss"] > 0
        assert len(h["expert_usage"]) == 2 and all(len(u) == 3 and abs(sum(u) - 1) < 1e-5 for u in h["expert_usage"])
    norms = [h["param_norm"] for h in history]
    assert len(set(norms)) == 3  # measured after each epoch, not once
    plain = create_model("tcn", "regression", {"seq_len": 4, "channels": 4, "levels": 2}, 1, 1, train=train)
    first = plain.fit(X, X[:, 0].astype(float), feature_names=["a", "b", "c"], symbols=symbols).history_[0]
    assert {"grad_norm", "grad_norm_max", "param_norm", "lr"} <= set(first) and "expert_usage" not in first


# ---- omni_mixture: the coarse (pooled) scale never hands a step a later bar ------------------------------


def test_omni_mixture_pools_causally_and_every_step_ignores_later_steps():
    from quant_cli.models.torch.omni_mixture import OmniMixture, OmniMixtureConfig, causal_pool

    torch.manual_seed(0)
    coarse, ends = causal_pool(torch.arange(7.0).reshape(1, 7, 1), pool=3)  # steps 0..6: patches [pad,0], [1,3], [4,6]
    assert ends.tolist() == [0, 3, 6] and coarse[0, :, 0].tolist() == [0.0, 2.0, 5.0]
    net = OmniMixture(OmniMixtureConfig(n_inputs=2, seq_len=12, d_model=8, heads=2, layers=2, pool=3, kernel_size=2,
                                        state=4, dropout=0.0)).eval()
    x = torch.randn(2, 12, 2)
    for cut in (4, 7, 10):  # rewrite every step from `cut` on: outputs at every earlier step stay put
        later = x.clone()
        later[:, cut:] = torch.randn(2, 12 - cut, 2)
        original, rewritten = net.embed(x), net.embed(later)
        for block in net.blocks:
            original, rewritten = block(original), block(rewritten)
        torch.testing.assert_close(rewritten[:, :cut], original[:, :cut], rtol=0, atol=1e-5)
        assert not torch.allclose(rewritten[:, cut:], original[:, cut:])
