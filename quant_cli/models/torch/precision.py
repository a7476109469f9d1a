"""Numeric precision and host-to-device copies of the training loop: pure decisions, torch-free,
so they are unit-tested on a CPU-only machine and recorded in the run.

Precision. Training autocasts its forward/backward only; scoring (validation, test, predict,
serve) runs in fp32 unless `[train] inference_precision` asks otherwise, so early stopping, the
backtest's ranks and bundle parity see full-precision scores.

    requested   CUDA with bf16      CUDA without bf16       CPU              MPS
    auto        bf16                fp16 + GradScaler       fp32             fp32
    bf16        bf16                fp16 + GradScaler       bf16             fp32
    fp16        fp16 + GradScaler   fp16 + GradScaler       fp32             fp32
    fp32        fp32                fp32                    fp32             fp32

fp16's 5-bit exponent underflows small gradients, hence the GradScaler; bf16 has fp32's range and
needs none. CPU autocast has bf16 kernels but no fp16 speed-up, and MPS autocast is left out
until it can be measured. `auto` never picks bf16 on CPU (slower than fp32 there).

Copies (`batch_transfer`): the panel lives on the GPU when it fits (models/torch/placement.panel_device);
otherwise it stays in pageable host memory — pinning gigabytes would lock RAM the OS cannot page —
and each batch is gathered straight into one of two pinned staging buffers, so its copy is truly
asynchronous and overlaps the previous batch's compute (a copy from pageable memory blocks the host
until the GPU has finished everything queued before it).
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INFERENCE_PRECISIONS = ("fp32", "auto", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    dtype: str  # "fp32", "bf16" or "fp16": what autocast runs in ("fp32": no autocast)
    grad_scaler: bool = False  # fp16 training needs loss scaling
    note: str = ""  # why a request was not honoured as spelled ("" when it was)


def device_kind(device: str) -> str:
    """'cuda', 'mps' or 'cpu' of a device string such as 'cuda:1'."""
    return device.split(":")[0]


def choose_precision(requested: str, device: str, bf16_supported: bool, training: bool = True) -> Precision:
    """The precision a fit (training=True) or a scoring pass uses on `device` (see the table above)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}; allowed: {', '.join(PRECISIONS)}")
    kind = device_kind(device)
    if requested == "fp32":
        return Precision("fp32")
    if kind == "cuda":
        if requested == "fp16" or not bf16_supported:
            asked_bf16 = requested == "bf16"
            note = f"{device} has no bf16 support; using fp16 with loss scaling" if asked_bf16 else ""
            return Precision("fp16", grad_scaler=training, note=note)
        return Precision("bf16")
    if kind == "cpu" and requested == "bf16":
        return Precision("bf16")
    if requested == "auto":
        return Precision("fp32")
    return Precision("fp32", note=f"{requested} autocast is not used on {kind}; running in fp32")


def batch_transfer(panel_device: str, train_device: str) -> str:
    """How batches reach the training device: 'direct' (the panel is already there, or no GPU is
    involved) or 'pinned' (gathered on the host into pinned staging buffers, copied asynchronously)."""
    if device_kind(train_device) != "cuda" or device_kind(panel_device) == "cuda":
        return "direct"
    return "pinned"
