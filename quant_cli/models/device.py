"""Which device a model trains on: `--device auto|cpu|cuda|cuda:N|mps`.

A request the machine cannot honour falls back to CPU with one warning per request (a run that
fits many models — folds, ensemble members — warns once), or fails when `strict` is set, so a
job that must use a GPU cannot silently run for hours on CPU.
"""

from __future__ import annotations

import re

from quant_cli.errors import ModelError
from quant_cli.report import SILENT, Reporter

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_warned: set[str] = set()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_device(requested: str) -> str:
    """Validate the spelling only (no hardware probe)."""
    if not isinstance(requested, str) or not _PATTERN.match(requested):
        allowed = ", ".join(repr(c) for c in DEVICE_CHOICES)
        raise ModelError(
            f"train.device {requested!r} is not a device; allowed: {allowed} (N a GPU number, e.g. 'cuda:1')"
        )
    return requested


def _unavailable(requested: str) -> str | None:
    """Why `requested` cannot be used here, or None when it can."""
    if requested.startswith("cuda"):
        count = _cuda_count()
        number = int(requested.split(":")[1]) if ":" in requested else 0
        if count == 0:
            return "CUDA is not available (no GPU, or torch was built without CUDA)"
        if number >= count:
            return f"there are {count} CUDA device(s), numbered 0..{count - 1}"
    if requested == "mps" and not _mps_available():
        return "Apple MPS is not available on this machine"
    return None


def resolve_device(requested: str, strict: bool = False, reporter: Reporter = SILENT) -> str:
    """The device to use: 'cpu', 'cuda', 'cuda:N' or 'mps'.

    'auto' picks cuda, then mps, then cpu, and never warns. An unavailable explicit request
    warns once and returns 'cpu', or raises ModelError (exit 2) when `strict`.
    """
    check_device(requested)
    if requested == "auto":
        return "cuda" if _cuda_count() else "mps" if _mps_available() else "cpu"
    reason = _unavailable(requested)
    if reason is None:
        return requested
    if strict:
        raise ModelError(
            f"train.device {requested!r} was requested but {reason}; use --device cpu or drop --strict-device"
        )
    if requested not in _warned:
        _warned.add(requested)
        reporter.warn(
            f"device {requested!r} requested but {reason}; training on CPU (pass --strict-device to fail instead)"
        )
    return "cpu"


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def cuda_index(device: str) -> int:
    """The GPU number of 'cuda' (0) or 'cuda:N'."""
    return int(device.split(":")[1]) if ":" in device else 0


def notice_once(key: str, message: str, reporter: Reporter = SILENT) -> None:
    """A notice printed once per process and key (ensembles and folds fit many models)."""
    if key not in _warned:
        _warned.add(key)
        reporter.notice(message)
