"""Starting the data-parallel group of `qfactory train` (quant_cli.models.torch.distributed).

- `--nproc N` (or `[train] nproc`) on one machine: this process is rank 0 and starts N-1 worker
  processes on loopback; gloo on CPU, nccl on CUDA with one GPU per process (cuda:0..N-1). A
  watchdog thread polls the workers: one that exits early stops the command at once with one line.
- torchrun (several machines, or one): every process runs the same `qfactory train` command with
  the standard environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK); RANK 0 writes
  the run, the others only train. Example, two machines with 4 GPUs each, on each machine:

      torchrun --nnodes 2 --nproc-per-node 4 --node-rank $NODE --master-addr $HEAD --master-port 29500 \\
          --no-python qfactory train --recipe recipes/lstm.toml --device cuda --strict-device

  The recipe, the dataset and the data home must be the same on every machine (rank 0 sends the
  training samples; the others read nothing but the recipe); only rank 0 needs the runs home.
- `--backend ray`: ranks 1..N-1 are Ray tasks on the cluster (one GPU each on CUDA), joined to this
  process as rank 0 over TCP; see `ray_workers`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from quant_cli.models.torch import distributed, topology

WATCH_S = 0.2  # how often rank 0 checks its local workers
JOIN_S = 30.0  # how long rank 0 waits for workers to leave after the last fit
_RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def serve_torchrun(device: str) -> None:
    """A torchrun rank other than 0: train whatever rank 0 sends, write nothing."""
    distributed.serve("torchrun", device)


@contextmanager
def data_parallel(
    nproc: int, device: str, backend: str = "local", on_dead_rank: Callable[[str], None] | None = None
) -> Iterator[distributed.World | None]:
    """The process group the torch fits inside the block train in (None: one process).

    Under torchrun this process is rank 0 of the torchrun group (nproc is ignored: torchrun's
    --nproc-per-node decides). Else `nproc` > 1 starts the workers here (`backend` local or ray).
    `on_dead_rank(message)` is called from a watchdog thread when a local worker dies early; it must
    end the process (the main thread may be blocked in a collective)."""
    if topology.torchrun_rank() is not None:
        world = distributed.init_world("torchrun", device)
        try:
            yield world
        finally:
            distributed.leave_world()
        return
    if nproc <= 1:
        yield None
        return
    starter = ray_workers if backend == "ray" else local_workers
    with starter(nproc, device, on_dead_rank) as world:
        yield world


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _rank0_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Workers:
    """Local worker processes, watched from a thread."""

    def __init__(self, nproc: int, device: str, on_dead_rank: Callable[[str], None] | None) -> None:
        self.nproc, self.closing = nproc, threading.Event()
        self.port = _free_port()
        self.logs = [tempfile.TemporaryFile() for _ in range(1, nproc)]  # noqa: SIM115 — open while the workers run
        env = {**os.environ, **self.group_env(), topology.DEVICE_ENV: device, "QFACTORY_DIST_PARENT": str(os.getpid())}
        command = [sys.executable, "-m", "quant_cli.models.torch.distributed"]
        self.procs = [
            subprocess.Popen(
                command,
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
            for r, log in zip(range(1, nproc), self.logs)
        ]
        self.on_dead_rank = on_dead_rank
        self.watcher = threading.Thread(target=self._watch, name="qfactory-rank-watchdog", daemon=True)
        self.watcher.start()

    def group_env(self) -> dict[str, str]:
        return {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(self.port),
            "WORLD_SIZE": str(self.nproc),
            "LOCAL_WORLD_SIZE": str(self.nproc),
        }

    def _watch(self) -> None:
        while not self.closing.wait(WATCH_S):
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code is not None and not self.closing.is_set():
                    message = self.describe(rank, proc, code)
                    self.kill()
                    if self.on_dead_rank is not None:
                        self.on_dead_rank(message)
                    return

    def describe(self, rank: int, proc: subprocess.Popen, code: int) -> str:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        log = self.logs[rank - 1]
        log.seek(0)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if line.startswith("qfactory rank")]
        said = f" ({lines[-1].strip()[:300]})" if lines else ""  # the worker's own one line, not torch's log noise
        return (
            f"data-parallel rank {rank} of {self.nproc} (pid {proc.pid}) {how}{said}; every rank was stopped — "
            "rerun it, or train with --nproc 1"
        )

    def dead(self) -> str | None:
        """The line naming the first worker that has exited with a failure, if any."""
        for rank, proc in enumerate(self.procs, start=1):
            code = proc.poll()
            if code not in (None, 0):
                return self.describe(rank, proc, code)
        return None

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait()

    def close(self, clean: bool) -> None:
        self.closing.set()
        for proc in self.procs:
            try:
                proc.wait(timeout=JOIN_S if clean else 5.0)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        for log in self.logs:
            log.close()


@contextmanager
def local_workers(nproc: int, device: str, on_dead_rank: Callable[[str], None] | None) -> Iterator[distributed.World]:
    """This process as rank 0 of `nproc` local processes."""
    workers = _Workers(nproc, device, on_dead_rank)
    clean = False
    try:
        with _rank0_env({**workers.group_env(), "RANK": "0", "LOCAL_RANK": "0"}):
            world = distributed.init_world("local", device, (0, nproc, 0), local_size=nproc)
        try:
            yield world
            clean = True
        finally:
            workers.closing.set()  # before the stop: workers leaving from here on is expected, not a death
            distributed.leave_world()
    except Exception:
        # rank 0 saw the failure first (a collective with a dead peer raises): name the dead rank instead
        time.sleep(2 * WATCH_S)
        if (dead := workers.dead()) is not None:
            workers.closing.set()
            raise topology.RankFailed(dead) from None
        raise
    finally:
        workers.close(clean)


@contextmanager
def ray_workers(nproc: int, device: str, on_dead_rank: Callable[[str], None] | None) -> Iterator[distributed.World]:
    """Ranks 1..nproc-1 as Ray tasks (RAY_ADDRESS's cluster, else a local Ray instance), this process rank 0.

    Ray Train's TorchTrainer is not used: it builds its own process group among Ray workers, and
    here rank 0 must be this process, the one that writes the run. The tasks run the same worker
    code as `--nproc` on one machine and must reach this host's MASTER_PORT over TCP."""
    from quant_cli.backend import RayBackend

    backend = RayBackend(nproc)
    ray = backend._ray
    host = ray.util.get_node_ip_address() if os.environ.get("RAY_ADDRESS") else "127.0.0.1"
    port = _free_port()
    env = {"MASTER_ADDR": host, "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": "1"}
    gpus = 1 if device.startswith("cuda") else 0
    remote = ray.remote(max_retries=0, num_gpus=gpus)(_ray_rank)
    refs = [remote.remote(rank, env, device) for rank in range(1, nproc)]
    watcher = _RayWatch(ray, refs, on_dead_rank)
    try:
        with _rank0_env({**env, "RANK": "0", "LOCAL_RANK": "0"}):
            world = distributed.init_world("ray", device, (0, nproc, 0), local_size=1)
        try:
            yield world
        finally:
            watcher.closing.set()  # before the stop: tasks ending from here on is expected
            distributed.leave_world()
        ray.get(refs, timeout=JOIN_S)
    finally:
        watcher.closing.set()
        for ref in refs:
            ray.cancel(ref, force=True)
        backend.close()


class _RayWatch:
    def __init__(self, ray, refs, on_dead_rank) -> None:
        self.ray, self.refs, self.on_dead_rank, self.closing = ray, refs, on_dead_rank, threading.Event()
        threading.Thread(target=self._watch, name="qfactory-ray-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while not self.closing.wait(1.0):
            done, _ = self.ray.wait(self.refs, num_returns=1, timeout=0)
            if done and not self.closing.is_set():
                rank = self.refs.index(done[0]) + 1
                try:
                    self.ray.get(done[0])
                    why = "left early"
                except Exception as exc:  # noqa: BLE001 — any task failure ends the group
                    why = f"failed: {str(exc).strip().splitlines()[-1][:300]}"
                if self.on_dead_rank is not None:
                    self.on_dead_rank(f"data-parallel rank {rank} (a Ray task) {why}; every rank was stopped")
                return


def _ray_rank(rank: int, env: dict[str, str], device: str) -> None:
    """One rank inside a Ray task (module-level: Ray pickles it by reference)."""
    os.environ.update({**env, "RANK": str(rank), "LOCAL_RANK": "0"})
    distributed.serve("ray", device)
