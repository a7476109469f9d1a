"""Devices: `auto` / `cuda` / `cuda:N` / `mps` resolve or fall back to the CPU with one warning,
bad spellings are named, and each library gets its GPU options only on CUDA. (This machine and CI
have no GPU: CUDA is simulated by patching the device count; real GPU runs: benchmarks/gpu_check.sh.)"""

import pytest
from helpers import TORCH_FAST, TRAIN_FAST, model_panel, params_for

from quant_cli.errors import ModelError
from quant_cli.models import device as device_mod
from quant_cli.models.device import resolve_device
from quant_cli.models.registry import create_model
from quant_cli.report import Reporter


@pytest.fixture
def no_gpu(monkeypatch):
    warnings = []
    monkeypatch.setattr(device_mod, "_cuda_count", lambda: 0)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    monkeypatch.setattr(device_mod, "_warned", set())
    # a model or call given no reporter reports to the silent base reporter: collect from that
    monkeypatch.setattr(Reporter, "warn", lambda self, message: warnings.append(message))
    return warnings


def test_resolve_device_falls_back_to_cpu_and_warns_once(no_gpu):
    assert resolve_device("auto", strict=False) == "cpu"
    assert resolve_device("cpu", strict=True) == "cpu"
    assert resolve_device("cuda", strict=False) == "cpu"
    assert resolve_device("cuda", strict=False) == "cpu"
    assert len(no_gpu) == 1 and "CUDA is not available" in no_gpu[0] and "--strict-device" in no_gpu[0]
    with pytest.raises(ModelError, match=r"train.device 'cuda:1' was requested but CUDA is not available"):
        resolve_device("cuda:1", strict=True)
    with pytest.raises(ModelError, match=r"train.device 'mps' was requested but Apple MPS is not available"):
        resolve_device("mps", strict=True)


def test_resolve_device_with_gpus(monkeypatch, no_gpu):
    monkeypatch.setattr(device_mod, "_cuda_count", lambda: 2)
    assert resolve_device("auto", strict=True) == "cuda"
    assert resolve_device("cuda:1", strict=True) == "cuda:1"
    with pytest.raises(ModelError, match=r"there are 2 CUDA device\(s\), numbered 0..1"):
        resolve_device("cuda:2", strict=True)


def test_bad_device_spelling_is_named():
    with pytest.raises(
        ModelError, match=r"train.device 'gpu' is not a device; allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
    ):
        resolve_device("gpu", strict=False)
    with pytest.raises(ModelError, match="train.device 'cuda:x'"):
        create_model("lightgbm", "regression", {}, 1, 1, device="cuda:x")


def test_model_asked_for_missing_cuda_trains_on_cpu_and_records_it(no_gpu):
    X, y, *_ = model_panel()
    for name in ("lightgbm", "mlp", "linear"):
        params = params_for(name, "regression", {"lightgbm": {"n_estimators": 10}, **TORCH_FAST})
        model = create_model(name, "regression", params, seed=1, threads=1, train=TRAIN_FAST, device="cuda")
        assert model.fit(X, y, feature_names=[f"f{i}" for i in range(X.shape[1])]).fit_info()["device"] == "cpu"


def test_gpu_options_only_on_cuda():
    lgb = create_model("lightgbm", "regression", {}, 1, 1)
    assert "device_type" not in lgb._lgb_params("cpu")
    on_gpu = lgb._lgb_params("cuda:1")
    assert on_gpu["device_type"] == "gpu" and on_gpu["gpu_device_id"] == 1
    xgb = create_model("xgboost", "regression", {}, 1, 1)
    xgb.device_ = "cuda:0"
    assert xgb._xgb_params()["device"] == "cuda:0"
    cat = create_model("catboost", "regression", {}, 1, 1)
    cat.device_ = "cuda:2"
    assert cat._cb_params()["task_type"] == "GPU" and cat._cb_params()["devices"] == "2"
    cat.device_ = "cpu"
    assert "task_type" not in cat._cb_params()


def test_single_models_still_say_when_they_cannot_use_the_device():
    linear = create_model("linear", "regression", {}, 1, 1)
    assert linear._usable_device("cuda:0") == "cpu"  # so `_device` tells the user once
