"""The one training loop of every torch model (mlp, lstm, gru, tcn, transformer).

AdamW; a learning-rate schedule with linear warm-up then cosine decay (or constant); gradient
clipping; early stopping on the validation loss or the validation IC (`monitor`), keeping the best
epoch's weights. Each epoch reports one line (train loss, val loss, val IC) and appends to the
history that the model saves as `history.json`, with telemetry: the learning rate of the epoch's
last step, the mean and largest global gradient norm before clipping, and the parameter norm after
the epoch; for a regression score also the validation PnL, turnover and exposure of the trading
losses' position rule (`trading`, quant_cli.models.torch.telemetry). Batches come from
`Samples.batches` (shuffled rows; for a cross-sectional model whole timestamps, whose codes reach the
network as `group=` through `Samples.context`).

Self-supervised pretraining (quant_cli.models.torch.pretrain) runs here too: its network returns
each window's own loss and its loss function is their mean, with no branch in this loop.

A network may add to this, with no branch here: `auxiliary_loss()` (a scalar tensor from its latest
training forward, added to the loss each step, recorded as `aux_loss`; e.g. moe load balancing) and
`epoch_stats()` (a JSON-able dict merged into the epoch's history entry, e.g. moe expert usage; the
network resets its counters there). Data parallel, each rank adds its own share's auxiliary loss.

Checkpoints: after every epoch `last.pt` holds everything needed to continue — weights,
optimizer, schedule, RNG state, history, the early-stopping state — and `best.pt` the best epoch's
weights; both are dicts of tensors and numbers loaded with `weights_only=True`. Resuming from
`last.pt` replays nothing: the per-epoch shuffle is seeded by (seed, epoch) and the dropout RNG is
restored, so on CPU a resumed fit ends bit-identical to an uninterrupted one.

GPU: autocast around the training forward/backward only — bf16 where the device supports it, else
fp16 with a GradScaler (quant_cli.models.torch.precision) — while scoring runs in fp32 unless
`inference_precision` says otherwise; TF32 matmuls; the panel on the GPU when it fits, else batches
gathered into pinned staging buffers (`PinnedStaging`) so their copies overlap compute;
`torch.compile(dynamic=True)` when asked, for the training forward only, so the short last batch
does not recompile and scoring runs the eager module. The RNG state of the device in use (cuda:N)
is checkpointed. CPU: deterministic algorithms and `threads`.

Data parallel (quant_cli.models.torch.distributed): with a process group of N ranks, rank 0 sends
the fit to the other ranks, every rank forwards its contiguous share of each global batch, the
outputs are gathered so the loss is the one-process loss of the whole batch, and DDP averages the
gradients (see `_GatherRows`). Rank 0 alone validates, checkpoints and decides early stopping.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from quant_cli.models.device import notice_once
from quant_cli.models.torch.config import LoopConfig
from quant_cli.models.torch.memory import return_freed_buffers
from quant_cli.models.torch.precision import (
    Precision,
    batch_transfer,
    choose_precision,
    device_kind,
)
from quant_cli.models.torch.telemetry import Trading, trading_stats
from quant_cli.models.torch.windows import Samples
from quant_cli.report import SILENT, Reporter

PREDICT_BATCH = 4096  # rows per inference batch (tabular, or short windows)
PREDICT_TOKENS = 65_536  # window steps per inference batch: at 4,096 windows x 64 steps one layer's
# (B, L, 3D) attention input alone was 200 MB, above the training batch's peak
CHECKPOINT_FORMAT = 1
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Trained:
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from: int = 0  # the epoch a resumed fit continued after (0: a fresh fit)
    precision: str = "fp32"  # what the training forward/backward ran in (bf16, fp16 or fp32)


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
    best: float = math.inf  # best monitored value, as a loss (IC is negated)
    best_epoch: int = 0
    waited: int = 0


@dataclass
class _Step:
    """What one optimiser step needs beyond the data: built once per fit."""

    run: nn.Module  # the training forward: compiled and/or DDP-wrapped `net`
    net: nn.Module  # the plain module (its parameters, clipping, saving)
    opt: torch.optim.Optimizer
    sched: Any
    precision: Precision
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    world: Any = None  # distributed.World when data-parallel, else None


def train(
    net: nn.Module,
    data: Samples,
    val: Samples | None,
    cfg: LoopConfig,
    loss_fn,
    *,
    device: str,
    seed: int,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    reporter: Reporter = SILENT,
    name: str = "model",
    on_epoch: Callable[[int], None] | None = None,
    world: Any = None,
    start: dict[str, Any] | None = None,
    trading: Trading | None = None,
) -> Trained:
    """Fit `net` in place; returns the history. `val` drives early stopping when cfg.patience > 0.
    `on_epoch(epoch)` runs after each epoch is recorded (tuning's pruning hook; it may raise to stop).
    `world`: a data-parallel group (rank 0 calls this; the other ranks get here through
    distributed.serve with `start`, rank 0's restored checkpoint when resuming). `trading`: the
    validation PnL, turnover and exposure of a regression score per epoch (models/torch/telemetry.py)."""
    return_freed_buffers()  # else freed activations stay resident and the peak RSS grows batch by batch
    step = _make_step(net, data, cfg, device, world)
    if step.precision.note:  # a precision asked for but not honoured as spelled (e.g. bf16 on a pre-Ampere GPU)
        notice_once(
            f"precision:{cfg.precision}:{device}", f"train.precision {cfg.precision!r}: {step.precision.note}", reporter
        )
    state, history, best = _State(), [], None
    loaded = checkpoints.load() if (checkpoints is not None and resume) else None
    if loaded is not None:
        state, history, best = _restore(step, *loaded, device)
    elif start is not None:
        state, history, _ = _restore(step, start, None, device)
    if world is not None and world.rank == 0:
        world.send_fit(net, data, cfg, loss_fn, seed, None if loaded is None else loaded[0])
    step.run = _wrap(step, cfg, device)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        telemetry = _epoch(step, data, cfg, loss_fn, device, seed, epoch)
        train_loss = telemetry.pop("train_loss")
        if world is not None and world.rank != 0:
            if world.stop_after_epoch():
                break
            continue
        try:
            scored = val is not None and len(val) > 0
            val_loss, val_ic, traded = (
                evaluate(net, val, loss_fn, cfg, device, trading) if scored else (math.nan, math.nan, {})
            )
            seconds = time.perf_counter() - started
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_ic": val_ic,
                    "seconds": round(seconds, 3),
                    "samples_per_s": round(len(data) / max(seconds, 1e-9), 1),
                    **telemetry,
                    **traded,
                }
            )
            best = _track(state, net, best, -val_ic if cfg.monitor == "ic" else val_loss, epoch)
            if checkpoints is not None:
                checkpoints.save(_snapshot(step, state, history, device), best if state.best_epoch == epoch else None)
            reporter.info(
                f"{name} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.5f}, val loss {val_loss:.5f}, "
                f"val IC {val_ic:.4f} ({seconds:.1f}s)"
            )
            stop = cfg.patience > 0 and val is not None and state.waited >= cfg.patience
            if world is None and on_epoch is not None:
                on_epoch(epoch)
        except BaseException:
            if world is not None:
                world.abort()  # the other ranks wait for this epoch's decision: release them first
            raise
        if world is not None:
            stop = world.decide(stop, on_epoch, epoch)  # one decision for every rank; the hook may abort all
        if stop:
            break
    if best is not None:
        net.load_state_dict(best)
    net.eval()
    return Trained(
        history, state.best_epoch, state.epoch, loaded[0]["epoch"] if loaded is not None else 0, step.precision.dtype
    )


def _track(state: _State, net: nn.Module, best, score: float, epoch: int):
    """Early-stopping bookkeeping after `epoch`; returns the best weights so far."""
    state.epoch = epoch
    if not math.isfinite(score):  # no validation rows: the latest epoch is kept
        state.best_epoch = epoch
        return _cpu(net.state_dict())
    if score < state.best:
        state.best, state.best_epoch, state.waited = score, epoch, 0
        return _cpu(net.state_dict())
    state.waited += 1
    return best


def _make_step(net: nn.Module, data: Samples, cfg: LoopConfig, device: str, world) -> _Step:
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * data.n_batches(cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, steps))
    precision = precision_for(cfg.precision, device)
    scaler = torch.amp.GradScaler(device_kind(device)) if precision.grad_scaler else None
    return _Step(net, net, opt, sched, precision, scaler, world)


def _wrap(step: _Step, cfg: LoopConfig, device: str) -> nn.Module:
    """The module the training forward calls: DDP around `net` when data-parallel, compiled when asked.
    dynamic=True: one graph for every batch size, so the short last batch does not recompile."""
    run = step.net
    if step.world is not None:
        run = step.world.wrap(run, device)
    return torch.compile(run, dynamic=True) if cfg.compile else run


def _epoch(step: _Step, data: Samples, cfg: LoopConfig, loss_fn, device: str, seed: int, epoch: int) -> dict:
    """One pass over shuffled mini-batches; the shuffle depends on (seed, epoch) only. Data parallel:
    each rank forwards its share of every global batch, and the loss is the global batch's.
    Returns the mean train loss and the epoch's telemetry (see the module doc)."""
    step.run.train()
    batches = data.batches(cfg.batch_size, torch.Generator().manual_seed(seed * 100_003 + epoch))
    inputs = batch_inputs(data, device)
    world = step.world
    if world is not None:
        world.seed_epoch(seed, epoch, device)
    auxiliary = getattr(step.net, "auxiliary_loss", None)  # the network's own hooks (not DDP's or compile's)
    total, aux_total, count, grad_norms, lr = 0.0, 0.0, 0, [], math.nan
    for idx in batches:
        local = idx if world is None else world.share(idx)
        with autocast(device, step.precision):
            x, ids = inputs(local if len(local) else idx[:1])
            context = data.context(local if len(local) else idx[:1], device)  # a cross-sectional net's timestamps
            # (b, K); an empty share forwards one row and keeps none
            out = step.run(x, ids, **context)[: len(local)].float()
        if world is not None:
            out = world.gather_rows(out, len(idx))  # (B, K), every rank's rows in batch order
        aux = auxiliary() if auxiliary is not None else None  # read before _previous forwards again
        extra = {}
        if getattr(loss_fn, "needs_previous", False):
            extra["previous"] = _previous(step, data, idx, local, device)
        loss = loss_fn(out, data.part("y", idx), data.part("w", idx), data.part("group", idx), **extra)
        lr = step.sched.get_last_lr()[0]  # the rate this step uses
        grad_norms.append(_backward(step, loss if aux is None else loss + aux.float(), cfg))
        total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        aux_total += 0.0 if aux is None else float(aux.detach()) * len(idx)
    stats = getattr(step.net, "epoch_stats", None)
    norms = torch.stack(grad_norms).float().cpu() if grad_norms else torch.zeros(1)
    param_norm = torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in step.net.parameters()]))
    return {
        "train_loss": total / max(count, 1),
        "lr": lr,
        "grad_norm": float(norms.mean()),
        "grad_norm_max": float(norms.max()),
        "param_norm": float(param_norm),
        **({"aux_loss": aux_total / max(count, 1)} if auxiliary is not None else {}),
        **(stats() if stats else {}),
    }


def _previous(step: _Step, data: Samples, idx: torch.Tensor, local: torch.Tensor, device: str):
    """The pnl loss's previous scores of a training batch: the same network on the windows ending
    one bar earlier (gradients flow through both, as the position change costs through both);
    data parallel, each rank scores its share and the rows are gathered as the batch's outputs are."""
    from quant_cli.models.torch.losses import Previous

    if data.prev is None:  # a family that does not say where its samples' previous rows are
        raise ValueError("the pnl loss needs Samples.prev (each sample's previous row)")
    x, ids, _ = data.previous_inputs(local if len(local) else idx[:1])
    with autocast(device, step.precision):
        score = step.run(x.to(device, non_blocking=True), ids)[: len(local), :1].float()  # (b, 1)
    if step.world is not None:
        score = step.world.gather_rows(score, len(idx))  # (B, 1)
    known = data.prev[idx.to(data.prev.device, non_blocking=True)] >= 0
    return Previous(score[:, 0], known.to(score.device))


def _backward(step: _Step, loss: torch.Tensor, cfg: LoopConfig) -> torch.Tensor:
    """One optimiser step; returns the global gradient norm before clipping (telemetry)."""
    step.opt.zero_grad(set_to_none=True)
    if step.scaler is None:
        loss.backward()
        norm = _grad_norm(step.net, cfg.grad_clip)
        step.opt.step()
    else:  # fp16: scaled loss, gradients unscaled before the norm and clipping; inf/NaN gradients skip the step
        step.scaler.scale(loss).backward()
        step.scaler.unscale_(step.opt)
        norm = _grad_norm(step.net, cfg.grad_clip)
        step.scaler.step(step.opt)
        step.scaler.update()
    step.sched.step()
    return norm


def _grad_norm(net: nn.Module, clip: float) -> torch.Tensor:
    """The global gradient norm before clipping (clipping to `clip` when it is > 0)."""
    if clip > 0:
        return nn.utils.clip_grad_norm_(net.parameters(), clip).detach()
    return nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None]).detach()


@torch.no_grad()
def infer(net: nn.Module, data: Samples, device: str, precision: str = "fp32") -> torch.Tensor:
    """(n, K) float32 outputs on CPU, in batches; autocast only when `precision` (inference_precision) asks."""
    net.eval()
    chunks, order = [], []
    batch = PREDICT_BATCH if data.seq_len == 0 else max(1, min(PREDICT_BATCH, PREDICT_TOKENS // data.seq_len))
    inputs = batch_inputs(data, device)
    with autocast(device, precision_for(precision, device, training=False)):
        for idx in data.batches(batch):  # in order; cross-sectional: whole timestamps
            x, ids = inputs(idx)
            chunks.append(net(x, ids, **data.context(idx, device)).float().cpu())
            order.append(idx.cpu())
    if not chunks:
        return torch.zeros(0, 1)
    out = torch.cat(chunks)
    return out if not data.cross_section else out[torch.argsort(torch.cat(order))]  # back to the samples' order


def evaluate(
    net, val: Samples, loss_fn, cfg: LoopConfig, device: str, trading: Trading | None = None
) -> tuple[float, float, dict[str, float]]:
    """(val loss over all of `val` at once — the sharpe loss needs whole timestamps —, val IC, the
    trading telemetry of `trading`), scored in cfg.inference_precision (fp32 by default) whatever the
    training precision."""
    out = infer(net, val, device, cfg.inference_precision)
    traded = trading_stats(out, val, trading)
    y, w = val.y.cpu(), None if val.w is None else val.w.cpu()
    group = None if val.group is None else val.group.cpu()
    extra = {}
    if getattr(loss_fn, "needs_previous", False):  # every sample's previous window, scored as a sample of its own
        from quant_cli.models.torch.losses import Previous

        known = val.prev >= 0
        stand_in = torch.where(known, val.prev, val.ends.to(val.prev.device))  # no previous row: its own window
        earlier = dataclasses.replace(val, ends=stand_in.to(val.ends.device))
        earlier = infer(net, earlier, device, cfg.inference_precision)
        extra["previous"] = Previous(earlier[:, 0], known.cpu())
    loss = float(loss_fn(out, y, w, group, **extra))
    if y.dim() == 2:  # a path model: IC of the summed (scaled) steps, a proxy of the compounded return
        score, y = out.sum(1), y.sum(1)
    elif out.shape[1] == 1:
        score = out[:, 0]
    else:
        score = torch.softmax(out, 1) @ torch.arange(out.shape[1], dtype=out.dtype)
    ic = information_coefficient(score.numpy(), y.double().numpy(), None if group is None else group.numpy())
    return loss, ic, traded


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


def _snapshot(step: _Step, state: _State, history: list[dict[str, float]], device: str) -> dict[str, Any]:
    snap = {
        "format": CHECKPOINT_FORMAT,
        "model": _cpu(step.net.state_dict()),
        "optimizer": step.opt.state_dict(),
        "scheduler": step.sched.state_dict(),
        "history": history,
        **rng_state(device),
        **asdict(state),
    }
    if step.scaler is not None:
        snap["grad_scaler"] = step.scaler.state_dict()
    return snap


def _restore(step: _Step, last: dict[str, Any], best, device: str) -> tuple[_State, list, Any]:
    step.net.load_state_dict(last["model"])
    step.opt.load_state_dict(last["optimizer"])
    step.sched.load_state_dict(last["scheduler"])
    if step.scaler is not None and "grad_scaler" in last:
        step.scaler.load_state_dict(last["grad_scaler"])
    set_rng_state(last, device)
    state = _State(**{f.name: last[f.name] for f in fields(_State)})
    return state, list(last["history"]), best
