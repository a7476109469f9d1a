"""Memory of torch training and inference (issue 10): activation checkpointing changes nothing but
memory, inference batches are bounded in window steps, and glibc gets a fixed mmap threshold."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from helpers import TORCH_FAST

from quant_cli.models.registry import create_model
from quant_cli.models.torch import loop
from quant_cli.models.torch.memory import return_freed_buffers
from quant_cli.models.torch.transformer import Transformer, TransformerConfig
from quant_cli.models.torch.windows import Samples


def _fit_predict(checkpoint: bool, extra: dict) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 3)).astype(np.float32)
    y = X[:, 0] + 0.1 * rng.standard_normal(240)
    symbols = np.repeat(["A", "B", "C"], 80)
    params = {**TORCH_FAST["transformer"], "layers": 2, "dropout": 0.3, "checkpoint": checkpoint, **extra}
    model = create_model(
        "transformer", "regression", params, 3, 1, symbol_encoding="embedding", train={"epochs": 2, "batch_size": 32}
    )
    model.fit(X, y, feature_names=list("abc"), symbols=symbols, X_val=X[:60], y_val=y[:60], symbols_val=symbols[:60])
    return model.predict(X, symbols=symbols)


@pytest.mark.parametrize("extra", [{}, {"positions": "rotary", "pooling": "attention"}])
def test_transformer_checkpointing_gives_bit_identical_predictions(extra):
    # dropout > 0: the recomputed forward must replay the same dropout masks
    assert np.array_equal(_fit_predict(False, extra), _fit_predict(True, extra), equal_nan=True)


def _saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        net(x).sum()
    return sum(saved)


def test_transformer_checkpointing_keeps_fewer_activations():
    x = torch.randn(16, 32, 8)
    sizes = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = Transformer(
            TransformerConfig(n_inputs=8, n_outputs=1, seq_len=32, d_model=16, heads=2, layers=3, checkpoint=checkpoint)
        ).train()
        sizes.append(_saved_bytes(net, x))
    assert sizes[1] < 0.5 * sizes[0], sizes


def test_inference_batches_are_bounded_in_window_steps():
    seq_len, n = 256, 1000
    net = Transformer(TransformerConfig(n_inputs=4, n_outputs=1, seq_len=seq_len, d_model=8, heads=2, layers=1))
    shapes = []
    net.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    data = Samples(torch.randn(n + seq_len, 4), torch.arange(seq_len - 1, seq_len - 1 + n), seq_len)
    out = loop.infer(net, data, "cpu")
    assert out.shape == (n, 1) and sum(s[0] for s in shapes) == n
    assert max(s[0] * s[1] for s in shapes) <= loop.PREDICT_TOKENS


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_gets_a_fixed_mmap_threshold():
    assert return_freed_buffers() is True
