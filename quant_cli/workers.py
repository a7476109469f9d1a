"""Worker processes die with the command that started them.

joblib's loky workers outlive a parent that is killed with SIGKILL (no cleanup runs): two workers of
a killed `walkforward --jobs 2` stayed alive under PID 1 for more than ten minutes, holding hundreds
of MB each and keeping loky's resource tracker alive. Every process pool qfactory starts passes
`die_with_parent` as the workers' initializer (`pool_kwargs()`), which makes each worker:

- ask Linux for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG), immediate; the kernel ties
  it to the parent *thread* that forked the worker, so it is not the only guard; and
- watch its parent on a daemon thread: when it is reparented (its parent pid changes), it exits.
  This works on every POSIX system and whichever thread spawned it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.2  # how soon an orphaned worker notices its parent is gone


def pool_kwargs() -> dict[str, Any]:
    """Keyword arguments for joblib.Parallel (loky backend) that make its workers die with this process."""
    return {"initializer": die_with_parent, "initargs": (os.getpid(),)}


def die_with_parent(parent_pid: int) -> None:
    """A worker initializer: end this process when `parent_pid` (the command) dies."""
    if os.getpid() == parent_pid:  # a pool that runs tasks in the parent itself (sequential fallback)
        return
    _parent_death_signal()
    if os.getppid() != parent_pid:  # not a direct child (or the parent died already): watch its pid
        watched = threading.Thread(target=_watch_pid, args=(parent_pid,), daemon=True, name="qfactory-parent-watch")
    else:
        watched = threading.Thread(target=_watch_ppid, args=(parent_pid,), daemon=True, name="qfactory-parent-watch")
    watched.start()


def _parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc to call: the watching thread still ends the worker
        pass


def _watch_ppid(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)  # reparented: the parent is gone; no cleanup of a half-done task is wanted


def _watch_pid(parent_pid: int) -> None:
    while _alive(parent_pid):
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True
