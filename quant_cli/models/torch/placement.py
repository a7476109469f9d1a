"""Where a torch fit runs and how its data gets there: seeding and determinism (`reproducible`,
`rng_state`), the precision and autocast of a device, host arrays and batches moved to the device
(pinned staging buffers when the panel stays on the host). Used by the training loop
(quant_cli.models.torch.loop), scoring, pretraining, fine-tuning and the profiler alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from quant_cli.models.torch.precision import Precision, batch_transfer, choose_precision, device_kind
from quant_cli.models.torch.windows import Samples

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def reproducible(seed: int, device: str, threads: int):
    """Seed torch without touching the caller's RNG state; deterministic kernels on CPU, TF32 on CUDA."""
    cuda = device.startswith("cuda")
    cuda_devices = [torch.device(device).index or 0] if cuda else []
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        if device == "cpu":
            torch.use_deterministic_algorithms(True)
        if cuda:  # TF32 tensor cores for float32 matmuls and convolutions
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(saved[0])
            torch.set_num_threads(saved[1])
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]


def bf16_supported(device: str) -> bool:
    """Whether `device` runs bf16 autocast natively (CUDA: compute capability 8.0+)."""
    if device_kind(device) != "cuda":
        return device_kind(device) == "cpu"
    with torch.cuda.device(torch.device(device)):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def precision_for(requested: str, device: str, training: bool = True) -> Precision:
    return choose_precision(requested, device, bf16_supported(device), training)


def autocast(device: str, precision: Precision | str):
    """Autocast to the precision's dtype on `device`, or nothing for fp32."""
    if isinstance(precision, str):
        precision = precision_for(precision, device, training=False)
    if precision.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_kind(device), dtype=_DTYPES[precision.dtype])


def to_device(array: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """A host array on `device`: through pinned memory with a non-blocking copy on CUDA."""
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def panel_device(nbytes: int, device: str) -> str:
    """Where the float32 panel lives: on the GPU when it takes under half its free memory."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return device if nbytes < free // 2 else "cpu"
    return device


class PinnedStaging:
    """Batches of a host-side panel, gathered into two pinned buffers used in turn and copied to the
    GPU without blocking; a buffer is refilled only once the copy that read it has finished."""

    def __init__(self, device: str, slots: int = 2) -> None:
        self.device, self.turn = device, 0
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.copied: list[Any] = [None] * slots  # the CUDA event after each buffer's last copy

    def inputs(self, data: Samples, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        slot, self.turn = self.turn, (self.turn + 1) % len(self.buffers)
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()
        need = data.batch_numel(len(idx))
        if self.buffers[slot] is None or self.buffers[slot].numel() < need:
            self.buffers[slot] = torch.empty(need, dtype=data.x.dtype, pin_memory=True)
        x, ids = data.inputs(idx.to(data.ends.device), out=self.buffers[slot])
        x = x.to(self.device, non_blocking=True)
        self.copied[slot] = torch.cuda.Event()
        self.copied[slot].record(torch.cuda.current_stream(torch.device(self.device)))
        return x, ids


def batch_inputs(data: Samples, device: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """idx → (x on `device`, ids) under the pinning policy (precision.batch_transfer)."""
    if batch_transfer(str(data.x.device), device) == "pinned":
        return PinnedStaging(device).inputs

    def direct(idx: torch.Tensor):
        x, ids = data.inputs(idx)
        return x.to(device, non_blocking=True), ids

    return direct


def rng_state(device: str) -> dict[str, torch.Tensor]:
    """The RNG streams a fit on `device` draws from: the CPU's, and the GPU's of that device (cuda:N)."""
    state = {"rng": torch.get_rng_state()}
    if device_kind(device) == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, Any], device: str) -> None:
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and device_kind(device) == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], torch.device(device))
