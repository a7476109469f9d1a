"""N-HiTS's own design (issue 19 §3), beyond the zoo harness's common checks: each stack reads its
input max-pooled with its own kernel, forecasts ceil(h / downsample) points interpolated to the h
steps of the path, and the blocks are doubly residual. Bad stack lists are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quant_cli.cli import app
from quant_cli.models.torch.nhits import NHiTS, NHiTSConfig

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "nhits.toml")
L, F, H = 8, 3, 6


def net(**params) -> NHiTS:
    torch.manual_seed(0)
    cfg = NHiTSConfig(n_inputs=F, n_outputs=H, seq_len=L, hidden=16, dropout=0.0, **params)
    return NHiTS(cfg).eval()


def windows(n: int = 5) -> torch.Tensor:
    return torch.randn(n, L, F, generator=torch.Generator().manual_seed(1))


def test_a_coarse_stack_forecasts_a_path_interpolated_from_its_few_points():
    x = windows()
    with torch.no_grad():
        flat = net(pool_kernels=[1], downsample=[H])(x)  # one point: a flat path
        line = net(pool_kernels=[1], downsample=[H // 2], interpolation="linear")(x)  # two points, linear
        free = net(pool_kernels=[1], downsample=[1])(x)  # every step its own coefficient
    assert torch.allclose(flat, flat[:, :1].expand(-1, H))
    inner = line[:, 1:-1].diff(dim=1)  # between the two points' centres the path is a straight line
    assert torch.allclose(inner[:, 1:], inner[:, :-1], atol=1e-6) and not torch.allclose(inner, torch.zeros_like(inner))
    assert not torch.allclose(free.diff(dim=1)[:, 1:], free.diff(dim=1)[:, :-1], atol=1e-3)


def test_a_stack_reads_its_input_max_pooled_over_its_kernel():
    x = windows()
    shuffled = x[:, torch.randperm(L, generator=torch.Generator().manual_seed(2))]  # same max per channel
    lowered = torch.where(x == x.amax(dim=1, keepdim=True), x, x - 1.0)  # same max, another mean
    whole = net(pool_kernels=[L], downsample=[1])  # one pool over the window: each channel's max
    fine = net(pool_kernels=[1], downsample=[1])
    with torch.no_grad():
        for other in (shuffled, lowered):
            assert torch.allclose(whole(x), whole(other), atol=1e-6)
            assert not torch.allclose(fine(x), fine(other), atol=1e-3)


def test_blocks_are_doubly_residual():
    x = windows()
    model = net(pool_kernels=[2, 1], downsample=[2, 1])
    first, second = model.blocks
    with torch.no_grad():
        back, fore = first(x, None)
        rest = x - back.view(x.shape)  # the second block reads what the first did not explain
        expected = fore + second(rest, None)[1]  # and the forecasts add up
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    "setting,line",
    [
        (
            "model.params.downsample=[2, 1]",
            "error: model 'nhits': pool_kernels [4, 2, 1] and downsample [2, 1] must have one entry per stack "
            "each; give model.params.pool_kernels and downsample the same length",
        ),
        (
            "model.params.pool_kernels=[40, 1, 1]",
            "error: model 'nhits': a pooling kernel of 40 is longer than seq_len 16; "
            "lower model.params.pool_kernels or raise seq_len",
        ),
        (
            'model.params.pool_kernels=[2, 0, "a"]',
            "error: model.params.pool_kernels: expected a non-empty list of integers >= 1 (one per stack) "
            "for model 'nhits', got [2, 0, 'a']",
        ),
        (
            "model.params.downsample=[]",
            "error: model.params.downsample: expected a non-empty list of integers >= 1 (one per stack) "
            "for model 'nhits', got []",
        ),
    ],
)
def test_bad_stack_lists_are_refused_in_one_line(runner, tmp_path, setting, line):
    data, runs = tmp_path / "data", tmp_path / "runs"
    result = runner.invoke(
        app, ["train", "--recipe", RECIPE, "--data-dir", str(data), "--runs-dir", str(runs), "--set", setting]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [line]
    assert not runs.exists() and not data.exists()  # refused before any work
