"""The GPU path's decisions (issue 22), checked on CPU: precision per device, fp32 scoring whatever
the training precision, the pinning policy, the RNG streams a checkpoint holds, torch.compile with
dynamic shapes. The CUDA branches themselves run in benchmarks/gpu_check.sh on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quant_cli.models.registry import create_model
from quant_cli.models.torch import placement
from quant_cli.models.torch.precision import Precision, batch_transfer, choose_precision
from quant_cli.models.torch.windows import Samples, gather

NOTE_BF16 = "cuda:1 has no bf16 support; using fp16 with loss scaling"


@pytest.mark.parametrize(
    ("requested", "device", "bf16", "expected"),
    [
        ("auto", "cuda", True, Precision("bf16")),
        ("auto", "cuda:1", False, Precision("fp16", grad_scaler=True)),
        ("bf16", "cuda:1", False, Precision("fp16", grad_scaler=True, note=NOTE_BF16)),
        ("fp16", "cuda", True, Precision("fp16", grad_scaler=True)),
        ("fp32", "cuda", True, Precision("fp32")),
        ("auto", "cpu", True, Precision("fp32")),
        ("bf16", "cpu", True, Precision("bf16")),
        ("fp16", "cpu", True, Precision("fp32", note="fp16 autocast is not used on cpu; running in fp32")),
        ("auto", "mps", False, Precision("fp32")),
        ("bf16", "mps", False, Precision("fp32", note="bf16 autocast is not used on mps; running in fp32")),
    ],
)
def test_precision_is_bf16_where_supported_else_fp16_with_a_scaler_else_fp32(requested, device, bf16, expected):
    assert choose_precision(requested, device, bf16) == expected


def test_scoring_never_scales_gradients():
    assert choose_precision("auto", "cuda", False, training=False) == Precision("fp16", grad_scaler=False)


def test_batches_of_a_host_panel_are_pinned_only_for_a_gpu():
    assert batch_transfer("cpu", "cuda:0") == "pinned"
    assert batch_transfer("cuda:0", "cuda:0") == "direct"
    assert batch_transfer("cpu", "cpu") == "direct"
    assert batch_transfer("mps", "mps") == "direct"


def test_gather_into_a_staging_buffer_equals_a_plain_gather():
    x = torch.arange(60, dtype=torch.float32).reshape(20, 3)
    ends = torch.tensor([4, 9, 19])
    for seq_len in (0, 1, 5):
        staged = torch.full((100,), -1.0)
        assert torch.equal(gather(x, ends, seq_len, out=staged), gather(x, ends, seq_len))
        by_hand = x[ends] if seq_len == 0 else torch.stack([x[e - seq_len + 1 : e + 1] for e in ends])
        assert torch.equal(gather(x, ends, seq_len), by_hand)


def test_rng_state_round_trips_the_cpu_stream():
    torch.manual_seed(5)
    saved = placement.rng_state("cpu")
    first = torch.rand(4)
    placement.set_rng_state(saved, "cpu")
    assert torch.equal(torch.rand(4), first) and set(saved) == {"rng"}


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, X[:, 0] * 0.5 - X[:, 1] * 0.2 + rng.normal(size=n) * 0.1


def test_bf16_training_is_scored_in_fp32_unless_inference_precision_says_otherwise():
    X, y = _data()
    model = create_model(
        "mlp",
        "regression",
        {"hidden": [16]},
        1,
        1,
        train={"epochs": 2, "batch_size": 64, "precision": "bf16", "patience": 0},
    )
    model.fit(X[:250], y[:250], feature_names=list("abc"))
    info = model.fit_info()
    assert info["precision"] == "bf16" and info["inference_precision"] == "fp32" and info["world_size"] == 1
    with torch.no_grad():  # an fp32 forward of the fitted network, by hand
        by_hand = model.net_(torch.as_tensor(X), None)[:, 0].double().numpy() * model.y_std_ + model.y_mean_
    np.testing.assert_allclose(model.predict(X), by_hand, rtol=1e-6, atol=1e-9)
    model.loop.inference_precision = "bf16"
    assert np.abs(model.predict(X) - by_hand).max() > 1e-4  # bf16 scores are visibly coarser: the check can fail


def test_compile_uses_dynamic_shapes_so_the_short_last_batch_does_not_recompile():
    """250 rows in batches of 64: three full batches and one of 58. A compile without dynamic shapes
    recompiles for the 58 (error_on_recompile turns that into a failure); scoring runs eager."""
    X, y = _data()
    settings = {"epochs": 2, "batch_size": 64, "patience": 0}
    params = {"hidden": [8], "dropout": 0.0}  # inductor draws dropout masks from its own RNG
    eager = create_model("mlp", "regression", params, 1, 1, train=settings)
    eager.fit(X[:250], y[:250], feature_names=list("abc"), X_val=X[250:], y_val=y[250:])
    torch._dynamo.reset()
    saved = torch._dynamo.config.error_on_recompile
    torch._dynamo.config.error_on_recompile = True
    try:
        compiled = create_model("mlp", "regression", params, 1, 1, train={**settings, "compile": True})
        compiled.fit(X[:250], y[:250], feature_names=list("abc"), X_val=X[250:], y_val=y[250:])
    finally:
        torch._dynamo.config.error_on_recompile = saved
        torch._dynamo.reset()
    assert compiled.fit_info()["train"]["compile"] is True
    np.testing.assert_allclose(compiled.predict(X), eager.predict(X), rtol=1e-4, atol=1e-5)


def test_samples_move_with_the_panel_and_the_rest_apart():
    data = Samples(torch.zeros(5, 2), torch.arange(5), 0, None, torch.ones(5))
    moved = data.to("cpu", "cpu")
    assert moved.x.shape == (5, 2) and torch.equal(moved.y, data.y) and moved.ids is None


def test_a_precision_not_honoured_as_spelled_is_a_notice(monkeypatch):
    from quant_cli.models import device as device_mod
    from quant_cli.report import CollectingReporter

    monkeypatch.setattr(device_mod, "_warned", set())
    X, y = _data(60)
    reporter = CollectingReporter()
    model = create_model(
        "mlp",
        "regression",
        {"hidden": [4]},
        1,
        1,
        reporter=reporter,
        train={"epochs": 1, "batch_size": 32, "precision": "fp16"},
    )
    model.fit(X, y, feature_names=list("abc"))
    assert model.fit_info()["precision"] == "fp32"
    assert ("notice", "train.precision 'fp16': fp16 autocast is not used on cpu; running in fp32") in reporter.messages
