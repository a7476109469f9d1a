"""A `walkforward --jobs 2` killed with SIGKILL takes its worker pool with it: no loky worker or
resource tracker outlives it (quant_cli.workers). A real CLI process, a real kill -9, and a bounded
wait that polls /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree from /proc")

RECIPE = """
[run]
name = "orphans"
seed = 3
[data]
dataset = "orphans"
source = "synthetic"
[data.synthetic]
symbols = 3
bars = 1500
[features]
sets = ["core"]
[label]
horizon = 3
[model]
name = "lightgbm"
[model.params]
n_estimators = 200
[walkforward]
train = 200
test = 20
validation = 0
"""


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1]); None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited; only its reaper is late


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def _poll(condition, timeout: float, what: str):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_kill_9_of_a_parallel_walkforward_leaves_no_worker_alive(tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ingest = subprocess.run(
        [
            sys.executable,
            "-c",
            "from quant_cli.cli import app; app()",
            "ingest",
            "--recipe",
            str(tmp_path / "r.toml"),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    cli = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from quant_cli.cli import app; app()",
            "walkforward",
            "--recipe",
            str(tmp_path / "r.toml"),
            "--jobs",
            "2",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pool: list[int] = []
    try:

        def busy_workers() -> list[int]:
            pool = [(p, _cmdline(p)) for p in _descendants(cli.pid)]
            workers = [p for p, cmd in pool if "loky" in cmd and "resource_tracker" not in cmd]
            # started and fitting folds: each has used CPU beyond its imports
            return workers if len(workers) >= 2 and all(_cpu_seconds(p) > 3.0 for p in workers) else []

        _poll(busy_workers, 240, "two busy loky workers")
        pool = _descendants(cli.pid)  # the workers and loky's resource tracker
        assert cli.poll() is None, "the walk-forward ended before it could be killed; make it longer"
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
        _poll(lambda: not [p for p in pool if _alive(p)], 30, f"the pool {pool} to die with its parent")
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in [p for p in pool if _alive(p)]:  # never leave strays when the test fails
            os.kill(pid, signal.SIGKILL)
