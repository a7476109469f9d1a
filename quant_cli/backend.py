"""Where independent tasks run: `local` (this machine, joblib) or `ray` (a Ray cluster).

One small interface — map a function over tasks, results in task order — used by tuning
trials, feature-store builds by symbol group and (once it lands) walk-forward folds:

    with open_backend("ray", jobs=4) as backend:
        backend.check_shared({"data home": data_dir, "runs home": runs_dir})
        results = backend.map(fit_fold, folds)      # list, in the order of `folds`

A task function must be a module-level function and its tasks plain picklable values (paths,
dataclasses, frames), never open handles: on `ray` they travel to other machines. Results come
back in task order whatever order the workers finish in, so a caller that combines them in that
order gets the same answer on every backend (tests hold `ray` == `local` bit for bit).

`local` with jobs=1 runs the tasks in this process, one after another (nothing to pickle, and
library objects such as a loaded split are shared); jobs>1 uses joblib's process pool. `ray`
connects to `RAY_ADDRESS` when it is set (a cluster started with `ray start --head`), else
starts a private Ray instance on loopback with `jobs` CPUs and stops it when done; an
already-initialised Ray (a test session, a notebook) is used as it is and left running.

Workers on other machines read inputs and write outputs under the data and runs homes, so
those must be on storage every worker sees: `check_shared` writes a probe file under each home
and has one task per Ray node read it back, and fails with one line naming the home otherwise.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from quant_cli.errors import QFactoryError, StorageError

T = TypeVar("T")
R = TypeVar("R")

BACKENDS = ("local", "ray")
_PROBE = ".qfactory-probe-"
_LOCAL_OBJECT_STORE = 512 * 1024**2  # tasks pass paths and small results; parts go to disk


class Backend:
    """Runs `fn` over tasks; results in task order. `local` with jobs=1 is the plain loop."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, int(jobs))

    @property
    def in_process(self) -> bool:
        """True when tasks run in this process (objects are shared, nothing is pickled)."""
        return self.jobs == 1

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        if self.in_process or len(tasks) <= 1:
            return [fn(task) for task in tasks]
        from joblib import Parallel, delayed

        from quant_cli.workers import pool_kwargs  # workers die with this process, also on kill -9

        parallel = Parallel(n_jobs=min(self.jobs, len(tasks)), backend="loky", **pool_kwargs())
        return list(parallel(delayed(fn)(t) for t in tasks))

    def check_shared(self, homes: dict[str, Path]) -> None:
        """Local workers share this machine's file system: nothing to check."""

    def close(self) -> None:
        pass


class RayBackend(Backend):
    """Ray tasks, one per item; parallelism is the cluster's (or `jobs` CPUs for a local instance)."""

    name = "ray"

    def __init__(self, jobs: int = 1) -> None:
        super().__init__(jobs)
        self._started = False
        self._ray = _import_ray()
        if not self._ray.is_initialized():
            self._start()

    @property
    def in_process(self) -> bool:
        return False

    def _start(self) -> None:
        address = os.environ.get("RAY_ADDRESS")
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if not address:  # a private instance on this machine, reachable on loopback only
            options.update(
                address="local",
                num_cpus=self.jobs,
                object_store_memory=_LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1",
            )
        else:
            _check_reachable(address)
            options.update(address=address)
        try:
            self._ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"RAY_ADDRESS={address}" if address else "a local Ray instance"
            raise QFactoryError(
                f"--backend ray: cannot connect to {where} ({str(exc).splitlines()[0]}); "
                "start the cluster with `ray start --head` and set RAY_ADDRESS, or unset it to run locally"
            ) from None
        self._started = True

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        remote = self._ray.remote(max_retries=0)(fn)
        return list(self._ray.get([remote.remote(task) for task in tasks]))

    def check_shared(self, homes: dict[str, Path]) -> None:
        """Every alive node reads back a probe file written here under each home."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probes = {}
        for label, home in homes.items():
            Path(home).mkdir(parents=True, exist_ok=True)
            probe = Path(home).resolve() / f"{_PROBE}{secrets.token_hex(6)}"
            probe.write_text(probe.name, encoding="utf-8")
            probes[label] = probe
        try:
            nodes = [n["NodeID"] for n in self._ray.nodes() if n.get("Alive")]
            remote = self._ray.remote(max_retries=0)(_read_probes)
            refs = [
                remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
                    {k: str(v) for k, v in probes.items()}
                )
                for node in nodes
            ]
            for host, unseen in self._ray.get(refs):
                if unseen:
                    label = unseen[0]
                    raise StorageError(
                        f"{label} {probes[label].parent} is not visible to Ray worker {host}; put "
                        "the data and runs homes on "
                        "storage every node mounts at the same path (NFS, a cluster file system) "
                        "and pass it with --data-dir/--runs-dir"
                    )
        finally:
            for probe in probes.values():
                probe.unlink(missing_ok=True)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable head for minutes: a host:port address gets a 5-second TCP check first."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto' and other forms: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise QFactoryError(
            f"--backend ray: cannot reach the Ray head at RAY_ADDRESS={address} ({exc.strerror or exc}); "
            "start it with `ray start --head` and check the address, or unset RAY_ADDRESS to run locally"
        ) from None


def _read_probes(probes: dict[str, str]) -> tuple[str, list[str]]:
    """(this worker's host, labels of the probe files it cannot read with the expected content)."""
    unseen = []
    for label, path in probes.items():
        try:
            ok = Path(path).read_text(encoding="utf-8") == Path(path).name
        except OSError:
            ok = False
        if not ok:
            unseen.append(label)
    return socket.gethostname(), unseen


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise QFactoryError("--backend ray needs Ray: install it with `pip install 'qfactory[ray]'`") from None
    return ray


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise QFactoryError(f"--backend {name!r} is not a backend; allowed: {', '.join(BACKENDS)}")
    return name


@contextmanager
def open_backend(name: str = "local", jobs: int = 1) -> Iterator[Backend]:
    """The backend called `name` ('local' or 'ray'), closed (a Ray instance it started stopped) on exit."""
    backend = RayBackend(jobs) if check_backend(name) == "ray" else Backend(jobs)
    try:
        yield backend
    finally:
        backend.close()


def map_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, backend: str | Backend = "local", jobs: int = 1) -> list[R]:
    """`fn` over `tasks` in task order, on a backend given by name (opened and closed here) or object.

    The hook walk-forward folds use:
    `run_folds(tasks, jobs, backend)` = `map_tasks(fit_fold, tasks, backend=backend, jobs=jobs)`.
    """
    if isinstance(backend, Backend):
        return backend.map(fn, tasks)
    with open_backend(backend, jobs) as opened:
        return opened.map(fn, tasks)
