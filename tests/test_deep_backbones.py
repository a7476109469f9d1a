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
