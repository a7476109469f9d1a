"""`qfactory profile`: what a torch model costs per training step at several context lengths.

For each sequence length the model's own network (built from its registered defaults and the
given model.params) runs `steps` timed forward+backward passes on random (batch, seq_len, features)
inputs after `warmup` untimed ones, under the training precision the loop would pick on that device
(quant_cli.models.torch.precision). Reported per length: samples/s, milliseconds per step, and the
peak memory — CUDA: `max_memory_allocated` of the device, reset per length; CPU: the process's
peak resident set (ru_maxrss), which can only grow, so lengths run shortest first and each row's
figure is the peak up to and including that length.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from quant_cli.errors import ModelError
from quant_cli.models.encoding import SymbolEncoder
from quant_cli.models.registry import create_model, torch_models
from quant_cli.models.torchmodel import TorchModel


@dataclass
class StepCost:
    seq_len: int
    batch_size: int
    samples_per_s: float
    ms_per_step: float
    peak_memory_mb: float
    memory: str  # "cuda max allocated" or "process peak RSS"
    precision: str


def _network(name: str, params: dict[str, Any], seq_len: int, n_features: int):
    model = create_model(name, "regression", {**params, **({"seq_len": seq_len} if _is_sequence(name) else {})}, 0, 0)
    if not isinstance(model, TorchModel):
        raise ModelError(f"qfactory profile measures torch models ({', '.join(torch_models())}); {name!r} is not one")
    model.encoder_ = SymbolEncoder("none").fit(None)
    return model._build(model._net_config(n_features))


def _is_sequence(name: str) -> bool:
    from quant_cli.models.registry import model_class

    return bool(getattr(model_class(name), "sequence", False))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def profile(
    name: str,
    seq_lens: list[int],
    batch_size: int,
    device: str = "cpu",
    n_features: int = 32,
    params: dict[str, Any] | None = None,
    steps: int = 5,
    warmup: int = 1,
    precision: str = "auto",
    seed: int = 0,
) -> list[StepCost]:
    """One StepCost per sequence length (shortest first); mlp ignores seq_len (one row per sample)."""
    import torch

    from quant_cli.models.torch import placement

    cuda = device.startswith("cuda")
    chosen = placement.precision_for(precision, device)
    rows = []
    for seq_len in sorted(set(seq_lens)):
        torch.manual_seed(seed)
        net = _network(name, params or {}, seq_len, n_features).to(device).train()
        shape = (batch_size, seq_len, n_features) if _is_sequence(name) else (batch_size, n_features)
        x, y = torch.randn(shape, device=device), torch.randn(batch_size, device=device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(device))

        for _ in range(warmup):
            _step(net, x, y, device, chosen)
        if cuda:
            torch.cuda.synchronize(torch.device(device))
        started = time.perf_counter()
        for _ in range(steps):
            _step(net, x, y, device, chosen)
        if cuda:
            torch.cuda.synchronize(torch.device(device))
        seconds = max(time.perf_counter() - started, 1e-9)
        peak = torch.cuda.max_memory_allocated(torch.device(device)) / 1024**2 if cuda else _peak_rss_mb()
        rows.append(
            StepCost(
                seq_len,
                batch_size,
                round(batch_size * steps / seconds, 1),
                round(1000 * seconds / steps, 2),
                round(peak, 1),
                "cuda max allocated" if cuda else "process peak RSS",
                chosen.dtype,
            )
        )
    return rows


def _step(net, x, y, device: str, precision) -> None:
    """One forward+backward pass, autocast as the training loop would."""
    from quant_cli.models.torch import placement

    with placement.autocast(device, precision):
        out = net(x, None)
    loss = ((out.float()[:, 0] - y) ** 2).mean()
    loss.backward()
    net.zero_grad(set_to_none=True)


def as_json(rows: list[StepCost]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def table(rows: list[StepCost]) -> str:
    """The rows as an aligned text table."""
    header = ("seq_len", "batch", "samples/s", "ms/step", "peak MB", "memory", "precision")
    body = [
        (
            str(r.seq_len),
            str(r.batch_size),
            f"{r.samples_per_s:,.1f}",
            f"{r.ms_per_step:.2f}",
            f"{r.peak_memory_mb:,.1f}",
            r.memory,
            r.precision,
        )
        for r in rows
    ]
    widths = [max(len(c) for c in column) for column in zip(header, *body)]
    lines = [
        "  ".join(c.rjust(w) if i < 5 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in (header, *body)
    ]
    return "\n".join(line.rstrip() for line in lines)


def lengths(spec: list[str] | None) -> list[int]:
    """--seq-len values: repeated or comma-separated positive integers (default 32, 64, 128, 256)."""
    if not spec:
        return [32, 64, 128, 256]
    out = []
    for part in ",".join(spec).split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ModelError(f"--seq-len {part!r} is not a positive integer; pass e.g. --seq-len 32,64,128")
        out.append(int(part))
    return out
