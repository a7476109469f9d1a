"""The one training loop of every torch model (mlp, lstm, gru, tcn, transformer).

AdamW; a learning-rate schedule with linear warm-up then cosine decay (or constant); gradient
clipping; early stopping on the validation loss or the validation IC (`monitor`), keeping the best
epoch's weights. Each epoch reports one line (train loss, val loss, val IC) and appends to the
history that the model saves as `history.json`, with telemetry: the learning rate of the epoch's
last step, the mean and largest global gradient norm before clipping, and the parameter norm after
the epoch.

A network may add to this, with no branch here: `auxiliary_loss()` (a scalar tensor from its latest
training forward, added to the loss each step, recorded as `aux_loss`; e.g. moe load balancing) and
`epoch_stats()` (a JSON-able dict merged into the epoch's history entry, e.g. moe expert usage; the
network resets its counters there).

Checkpoints: after every epoch `last.pt` holds everything needed to continue — weights,
optimizer, schedule, RNG state, history, the early-stopping state — and `best.pt` the best epoch's
weights; both are dicts of tensors and numbers loaded with `weights_only=True`. Resuming from
`last.pt` replays nothing: the per-epoch shuffle is seeded by (seed, epoch) and the dropout RNG is
restored, so on CPU a resumed fit ends bit-identical to an uninterrupted one.

GPU: bf16 autocast (`precision = "auto"` picks it where the GPU supports it), TF32 matmuls, the
panel on the GPU when it fits (else pinned host memory and non-blocking copies), `torch.compile`
when asked. CPU: deterministic algorithms and `threads`.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quant_cli.io import write_bytes_atomic
from quant_cli.models.torch.config import LoopConfig
from quant_cli.models.torch.memory import return_freed_buffers
from quant_cli.models.torch.windows import Samples
from quant_cli.report import SILENT, Reporter

PREDICT_BATCH = 4096    # rows per inference batch (tabular, or short windows)
PREDICT_TOKENS = 65_536  # window steps per inference batch: at 4,096 windows x 64 steps one layer's
                         # (B, L, 3D) attention input alone was 200 MB, above the training batch's peak
CHECKPOINT_FORMAT = 1


@dataclass
class Trained:
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from: int = 0  # the epoch a resumed fit continued after (0: a fresh fit)


@contextlib.contextmanager
def reproducible(seed: int, device: str, threads: int):
    """Seed torch without touching the caller's RNG state; deterministic kernels on CPU, TF32 on CUDA."""
    cuda = device.startswith("cuda")
    cuda_devices = [torch.device(device).index or 0] if cuda else []
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
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


def autocast(device: str, precision: str):
    """bf16 autocast where asked (auto: on a CUDA device that supports it), else nothing."""
    cuda = device.startswith("cuda")
    if precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported()):
        return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def _lr_factor(cfg: LoopConfig, total_steps: int):
    warm = max(1, int(cfg.warmup * total_steps)) if cfg.warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class Checkpoints:
    """`last.pt` (everything to continue) and `best.pt` (best weights) in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _write(self, name: str, obj: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.folder / name, buffer.getvalue())

    def save(self, last: dict[str, Any], best: dict[str, torch.Tensor] | None) -> None:
        if best is not None:  # best first: a kill between the two leaves a consistent pair
            self._write("best.pt", _cpu(best))
        self._write("last.pt", last)

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
        if not (self.folder / "last.pt").is_file():
            return None
        last = torch.load(self.folder / "last.pt", map_location="cpu", weights_only=True)
        best_path = self.folder / "best.pt"
        best = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.is_file() else None
        return last, best


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@dataclass
class _State:
    epoch: int = 0
    best: float = math.inf        # best monitored value, as a loss (IC is negated)
    best_epoch: int = 0
    waited: int = 0


def train(net: nn.Module, data: Samples, val: Samples | None, cfg: LoopConfig, loss_fn, *, device: str, seed: int,
          checkpoints: Checkpoints | None = None, resume: bool = False, reporter: Reporter = SILENT,
          name: str = "model", on_epoch: Callable[[int], None] | None = None) -> Trained:
    """Fit `net` in place; returns the history. `val` drives early stopping when cfg.patience > 0.
    `on_epoch(epoch)` runs after each epoch is recorded (tuning's pruning hook; it may raise to stop)."""
    return_freed_buffers()  # else freed activations stay resident and the peak RSS grows batch by batch
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, steps))
    state, history, best = _State(), [], None
    loaded = checkpoints.load() if (checkpoints is not None and resume) else None
    if loaded is not None:
        state, history, best = _restore(net, opt, sched, *loaded, device)
    run = torch.compile(net) if cfg.compile else net
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        telemetry = _epoch(run, opt, sched, data, cfg, loss_fn, device, seed, epoch)
        train_loss = telemetry.pop("train_loss")
        val_loss, val_ic = evaluate(run, val, loss_fn, cfg, device) if val is not None and len(val) else (math.nan, math.nan)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_ic": val_ic,
                        "seconds": round(seconds, 3), "samples_per_s": round(len(data) / max(seconds, 1e-9), 1),
                        **telemetry})
        score = -val_ic if cfg.monitor == "ic" else val_loss
        state.epoch = epoch
        if not math.isfinite(score):  # no validation rows: the latest epoch is kept
            best, state.best_epoch = _cpu(net.state_dict()), epoch
        elif score < state.best:
            best, state.best, state.best_epoch, state.waited = _cpu(net.state_dict()), score, epoch, 0
        else:
            state.waited += 1
        if checkpoints is not None:
            checkpoints.save(_snapshot(net, opt, sched, state, history), best if state.best_epoch == epoch else None)
        reporter.info(f"{name} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.5f}, val loss {val_loss:.5f}, "
                      f"val IC {val_ic:.4f} ({seconds:.1f}s)")
        if on_epoch is not None:
            on_epoch(epoch)
        if cfg.patience > 0 and val is not None and state.waited >= cfg.patience:
            break
    if best is not None:
        net.load_state_dict(best)
    net.eval()
    return Trained(history, state.best_epoch, state.epoch, loaded[0]["epoch"] if loaded is not None else 0)


def _epoch(net, opt, sched, data: Samples, cfg: LoopConfig, loss_fn, device: str, seed: int, epoch: int) -> dict:
    """One pass over shuffled mini-batches; the shuffle depends on (seed, epoch) only.
    Returns the mean train loss and the epoch's telemetry (see the module doc)."""
    net.train()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).to(data.ends.device)
    auxiliary = getattr(net, "auxiliary_loss", None)
    total, aux_total, count, grad_norms, lr = 0.0, 0.0, 0, [], math.nan
    for idx in order.split(cfg.batch_size):
        x, ids = data.inputs(idx)
        with autocast(device, cfg.precision):
            out = net(x.to(device, non_blocking=True), ids)  # (B, K)
        loss = loss_fn(out.float(), data.part("y", idx), data.part("w", idx), data.part("group", idx))
        aux = auxiliary() if auxiliary is not None else None
        opt.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        grad_norms.append(_grad_norm(net, cfg.grad_clip))
        lr = sched.get_last_lr()[0]  # the rate this step uses
        opt.step()
        sched.step()
        total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        aux_total += 0.0 if aux is None else float(aux.detach()) * len(idx)
    stats = getattr(net, "epoch_stats", None)
    norms = torch.stack(grad_norms).float().cpu() if grad_norms else torch.zeros(1)
    param_norm = torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in net.parameters()]))
    return {"train_loss": total / max(count, 1), "lr": lr, "grad_norm": float(norms.mean()),
            "grad_norm_max": float(norms.max()), "param_norm": float(param_norm),
            **({"aux_loss": aux_total / max(count, 1)} if auxiliary is not None else {}), **(stats() if stats else {})}


def _grad_norm(net: nn.Module, clip: float) -> torch.Tensor:
    """The global gradient norm before clipping (clipping to `clip` when it is > 0)."""
    if clip > 0:
        return nn.utils.clip_grad_norm_(net.parameters(), clip).detach()
    return nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None]).detach()


@torch.no_grad()
def infer(net: nn.Module, data: Samples, device: str, precision: str = "fp32") -> torch.Tensor:
    """(n, K) float32 outputs on CPU, in batches."""
    net.eval()
    chunks, batch = [], PREDICT_BATCH if data.seq_len == 0 else max(1, min(PREDICT_BATCH, PREDICT_TOKENS // data.seq_len))
    for idx in torch.arange(len(data), device=data.ends.device).split(batch):
        x, ids = data.inputs(idx)
        with autocast(device, precision):
            chunks.append(net(x.to(device, non_blocking=True), ids).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 1)


def evaluate(net, val: Samples, loss_fn, cfg: LoopConfig, device: str) -> tuple[float, float]:
    """(val loss over all of `val` at once — the sharpe loss needs whole timestamps —, val IC)."""
    out = infer(net, val, device, cfg.precision)
    y, w = val.y.cpu(), None if val.w is None else val.w.cpu()
    group = None if val.group is None else val.group.cpu()
    loss = float(loss_fn(out, y, w, group))
    score = out[:, 0] if out.shape[1] == 1 else torch.softmax(out, 1) @ torch.arange(out.shape[1], dtype=out.dtype)
    return loss, information_coefficient(score.numpy(), y.double().numpy(), None if group is None else group.numpy())


def information_coefficient(score: np.ndarray, y: np.ndarray, group: np.ndarray | None) -> float:
    """Mean per-timestamp Pearson correlation (pooled when there are no timestamps)."""
    if group is None:
        return _corr(score, y)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    ics = [_corr(s, t) for s, t in zip(np.split(score[order], bounds), np.split(y[order], bounds)) if len(s) > 2]
    ics = [ic for ic in ics if math.isfinite(ic)]
    return float(np.mean(ics)) if ics else _corr(score, y)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _snapshot(net, opt, sched, state: _State, history: list[dict[str, float]]) -> dict[str, Any]:
    snap = {"format": CHECKPOINT_FORMAT, "model": _cpu(net.state_dict()), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "history": history, **asdict(state)}
    if torch.cuda.is_available() and next(net.parameters()).is_cuda:
        snap["cuda_rng"] = torch.cuda.get_rng_state()
    return snap


def _restore(net, opt, sched, last: dict[str, Any], best, device: str) -> tuple[_State, list, Any]:
    net.load_state_dict(last["model"])
    opt.load_state_dict(last["optimizer"])
    sched.load_state_dict(last["scheduler"])
    torch.set_rng_state(last["rng"])
    if "cuda_rng" in last and device.startswith("cuda"):
        torch.cuda.set_rng_state(last["cuda_rng"])
    state = _State(**{f.name: last[f.name] for f in fields(_State)})
    return state, list(last["history"]), best
