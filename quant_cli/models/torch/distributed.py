"""Data-parallel training of one torch model in N processes: torch.distributed + DDP.

Every rank holds the whole training set (the panel and the window index); each global batch of
`batch_size` windows — the one a single process would draw, from the same (seed, epoch) shuffle —
is cut into N contiguous shares, one per rank. A rank forwards its share; the outputs are gathered
(`_GatherRows`) so every rank computes the loss of the whole global batch exactly as one process
would (weighted, sharpe and cross-entropy losses included, not only means), and DDP averages the
gradients. `_GatherRows.backward` scales a rank's output gradient by N to undo that average, so the
update equals one process's update on the same batch up to float summation order.

Protocol (rank 0 is the process that writes the run; the others only train):
- the store (a TCPStore at MASTER_ADDR:MASTER_PORT) holds one key per fit, `qfactory/task/<k>`:
  "fit" or "stop". Waiting ranks poll it, so they can idle for as long as rank 0 spends building
  features and the split, and they notice a dead rank 0 (the store goes away with it).
- a fit: rank 0 broadcasts the job (network with its initial weights, samples, loop settings, loss,
  seed, and the checkpoint it resumed from) over a gloo control group; every rank builds the same
  optimiser and schedule and wraps the network in DDP (which broadcasts rank 0's weights).
- after each epoch rank 0 alone validates, checkpoints and reports, then broadcasts one decision
  (go on, stop early, abort) that every rank follows; dropout draws from a stream seeded by
  (seed, epoch, rank), so a resumed data-parallel fit repeats the same masks.
- collectives time out after QFACTORY_DIST_TIMEOUT seconds (default 1800); the local launcher
  (quant_cli.models.torch.launch) also watches its workers and stops the command at once when one dies.

Worker processes run `python -m quant_cli.models.torch.distributed` (the local launcher starts
them), or `qfactory train` under torchrun with RANK > 0 (quant_cli.models.torch.launch).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from quant_cli.errors import QFactoryError
from quant_cli.models.torch.topology import (
    DEVICE_ENV,
    env_ranks,
    share_counts,
    timeout_s,
)

POLL_S = 0.5  # a waiting rank checks for the next task (and a vanished rank 0) this often
GO, STOP, ABORT = 0, 1, 2
_WORLD: World | None = None


def current() -> World | None:
    """The data-parallel group this process trains in, or None (one process)."""
    return _WORLD


class _GatherRows(torch.autograd.Function):
    """(b_r, K) outputs of every rank → (B, K) in global-batch order. Backward hands each rank its own
    rows' gradient times N: DDP then averages N copies of the one-process gradient back to it."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        width = max(counts)
        padded = local.new_zeros((width, *local.shape[1:]))
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        ctx.rank, ctx.counts = rank, counts
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]] * len(ctx.counts), None, None


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    backend: str  # "gloo" (CPU) or "nccl" (CUDA)
    launcher: str  # "local" (--nproc), "torchrun" or "ray"
    store: Any = None
    control: Any = None  # a gloo group for jobs and decisions, whatever the training backend
    tasks: int = 0
    local_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- rank 0 ----------------------------------------------------------------------------------

    def send_fit(self, net: nn.Module, data, cfg, loss_fn, seed: int, start: dict[str, Any] | None) -> None:
        """Start a fit on every other rank: the job goes over the control group."""
        self.tasks += 1
        self.store.set(f"qfactory/task/{self.tasks}", "fit")
        job = {
            "net": copy.deepcopy(net).cpu(),
            "data": data.to("cpu"),
            "cfg": cfg,
            "loss_fn": loss_fn,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "start": start,
        }
        dist.broadcast_object_list([job], src=0, group=self.control)

    def decide(self, stop: bool, on_epoch, epoch: int) -> bool:
        """Rank 0's end-of-epoch decision, sent to every rank; `on_epoch` raising aborts them all."""
        code, error = (STOP if stop else GO), None
        if on_epoch is not None:
            try:
                on_epoch(epoch)
            except BaseException as exc:  # noqa: BLE001 — re-raised below, after the others are told
                code, error = ABORT, exc
        self._broadcast_code(code)
        if error is not None:
            raise error
        return code != GO

    def abort(self) -> None:
        """Rank 0 failed between epochs: release the ranks waiting for its decision."""
        self._broadcast_code(ABORT)

    def close(self) -> None:
        """Rank 0: tell every waiting rank there is nothing more to train."""
        self.tasks += 1
        self.store.set(f"qfactory/task/{self.tasks}", "stop")

    # ---- every rank ------------------------------------------------------------------------------

    def _broadcast_code(self, code: int) -> int:
        flag = torch.tensor([code], dtype=torch.int64)
        dist.broadcast(flag, src=0, group=self.control)
        return int(flag.item())

    def stop_after_epoch(self) -> bool:
        """Rank 0's decision: True ends this fit (stopped early, or aborted: a pruned tuning trial, a
        failure on rank 0), and the rank goes back to waiting for the next task."""
        return self._broadcast_code(GO) != GO

    def device(self, kind: str) -> str:
        """This rank's device: its own GPU (cuda:LOCAL_RANK) on CUDA, else the CPU."""
        return f"cuda:{self.local_rank}" if kind.startswith("cuda") else "cpu"

    def cpu_threads(self, threads: int) -> int:
        """threads = 0 (all cores) split between the ranks on this machine, so they do not oversubscribe."""
        return threads if threads > 0 else max(1, (os.cpu_count() or 1) // max(1, self.local_size))

    def seed_epoch(self, seed: int, epoch: int, device: str) -> None:
        torch.manual_seed(seed * 100_003 + epoch * 1_009 + self.rank * 7_919 + 1)

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        return idx.tensor_split(self.size)[self.rank]

    def gather_rows(self, out: torch.Tensor, n: int) -> torch.Tensor:
        return _GatherRows.apply(out, share_counts(n, self.size), self.rank)

    def wrap(self, net: nn.Module, device: str) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
        return DistributedDataParallel(net, device_ids=ids)

    # ---- ranks other than 0 ----------------------------------------------------------------------

    def next_job(self, alive=lambda: True) -> dict[str, Any] | None:
        """Wait for rank 0's next task: the job of a fit, or None when it is done."""
        key = f"qfactory/task/{self.tasks + 1}"
        while not self.store.check([key]):  # raises once rank 0 (the store's host) is gone
            if not alive():
                raise QFactoryError("rank 0 is gone")
            time.sleep(POLL_S)
        self.tasks += 1
        if self.store.get(key) == b"stop":
            return None
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


def init_world(
    launcher: str, device_kind: str, ranks: tuple[int, int, int] | None = None, local_size: int | None = None
) -> World:
    """Join the process group described by the torchrun environment (or `ranks`)."""
    global _WORLD
    rank, size, local = ranks or env_ranks()
    backend = "nccl" if device_kind.startswith("cuda") else "gloo"
    timeout = dt.timedelta(seconds=timeout_s())
    # torchrun's agent may host the store itself; then rank 0 is one more client of it
    master = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, master, timeout=timeout)
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend, store=dist.PrefixStore("qfactory/pg/", store), rank=rank, world_size=size, timeout=timeout
    )
    control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    local_size = local_size or int(os.environ.get("LOCAL_WORLD_SIZE", size))
    _WORLD = World(rank, size, local, backend, launcher, store, control, local_size=local_size)
    return _WORLD


def leave_world() -> None:
    """Close this process's group (rank 0 first tells the others to stop)."""
    global _WORLD
    world, _WORLD = _WORLD, None
    if world is None:
        return
    if world.rank == 0:
        world.close()
    if dist.is_initialized():
        dist.destroy_process_group()


def run_job(world: World, job: dict[str, Any], device_kind: str) -> None:
    """A worker's part of one fit."""
    from quant_cli.models.torch import loop, placement

    device = world.device(device_kind)
    data = job["data"]
    data = data.to(device, placement.panel_device(data.x.element_size() * data.x.nelement(), device))
    with placement.reproducible(job["seed"], device, job["threads"]):
        net = job["net"].to(device)
        loop.train(
            net,
            data,
            None,
            job["cfg"],
            job["loss_fn"],
            device=device,
            seed=job["seed"],
            world=world,
            start=job["start"],
        )


def serve(launcher: str, device_kind: str, alive=lambda: True) -> None:
    """A worker rank: join the group, train every fit rank 0 sends, leave when it says stop."""
    world = init_world(launcher, device_kind)
    try:
        while (job := world.next_job(alive)) is not None:
            run_job(world, job, device_kind)
    finally:
        leave_world()


def _parent_alive(parent: int):
    return lambda: os.getppid() == parent


def main() -> int:
    """Entry of a local worker process (started by quant_cli.models.torch.launch)."""
    parent = int(os.environ.get("QFACTORY_DIST_PARENT", os.getppid()))
    try:
        serve("local", os.environ.get(DEVICE_ENV, "cpu"), _parent_alive(parent))
    except Exception as exc:  # noqa: BLE001 — a worker reports one line; rank 0 names the failed rank
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"qfactory rank {os.environ.get('RANK')}: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
