"""Atomic file writes: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl


@contextmanager
def storage_errors(path: Path | str, *, own_name: bool = True) -> Iterator[None]:
    """Disk-full, read-only and permission failures in the block become a StorageError naming `path`
    (or, with `own_name`, the file an OSError names itself): exit 2 and one line, whoever raised it.
    polars and deltalake raise their own exception types for these (errno only in the message)."""
    from quant_cli.errors import QFactoryError, storage_error

    try:
        yield
    except QFactoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library's wrapper of an OS failure
        error = storage_error(exc, path, own_name=own_name)
        if error is None:
            raise
        raise error from exc


@contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 during the block; drop it when the block
    fails on a storage error, else pass it on. deltalake's Rust writer threads panic after a failed
    write on a full disk ("Already shut down", a backtrace each): a StorageError's one line says it all."""
    from quant_cli.errors import STORAGE_FIXES, os_errno

    sys.stderr.flush()
    held = os.memfd_create("qfactory-stderr") if hasattr(os, "memfd_create") else _unlinked_temp_fd()
    saved = os.dup(2)
    os.dup2(held, 2)
    drop = False
    try:
        yield
    except BaseException as exc:
        drop = os_errno(exc) in STORAGE_FIXES
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not drop:
            os.lseek(held, 0, os.SEEK_SET)
            while chunk := os.read(held, 1 << 16):
                os.write(2, chunk)
        os.close(held)


def _unlinked_temp_fd() -> int:
    import tempfile

    handle = tempfile.TemporaryFile()
    return os.dup(handle.fileno())


def new_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create an empty, uniquely named file in `folder` with the usual permissions.

    Unlike tempfile.mkstemp (always 0600), the mode is 0666 minus the process umask, so the
    file that is renamed into place is as readable as any file the user creates.
    """
    while True:
        tmp = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            with storage_errors(folder, own_name=False):
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def new_temp_dir(folder: Path, prefix: str) -> Path:
    """Create an empty, uniquely named folder in `folder`: 0777 minus the umask (mkdtemp: 0700)."""
    while True:
        tmp = Path(folder) / f"{prefix}{secrets.token_hex(6)}"
        try:
            with storage_errors(folder, own_name=False):
                tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:
            continue


def _tmp_sibling(path: Path) -> Path:
    with storage_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return new_temp_file(path.parent, prefix=f".{path.name}.")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Every failure names `path`, not the temporary sibling the OS error is about."""
    tmp = _tmp_sibling(path)
    try:
        with storage_errors(path, own_name=False):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, to_json(_finite(obj)))


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than producing invalid JSON."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json_finite(obj: Any) -> str:
    """The text write_json_atomic writes for `obj` (NaN and inf as null): what reading the file back gives."""
    return to_json(_finite(obj))


# Every JSON file the tool reads back (run manifests, metrics, bundles, specs) goes through one
# bounded reader: a hostile or damaged file cannot exhaust memory or the interpreter's stack
# (json recurses per nesting level: 200k-deep input is a RecursionError, not a ValueError).
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 100


class JSONLimitError(ValueError):
    """A JSON document over the size or nesting-depth cap: a ValueError, so it is handled as invalid JSON."""


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays/objects in a JSON document, string contents ignored (numpy, no recursion)."""
    import numpy as np

    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    step = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int64) - ((codes == 0x5D) | (codes == 0x7D))
    return int(np.cumsum(step).max(initial=0))


def parse_json(data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with a size and a nesting-depth cap; every violation is a ValueError (JSONLimitError)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise JSONLimitError(f"{len(raw):,} bytes, over the {max_bytes:,}-byte limit for a JSON file")
    depth = json_depth(raw)
    if depth > max_depth:
        raise JSONLimitError(f"nested {depth:,} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(raw)
    except RecursionError:  # unreachable after the depth check; kept so no input can raise it
        raise JSONLimitError(f"nested deeper than the limit of {max_depth}") from None


def read_json_bytes(path: Path, *, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """A JSON file's bytes, refusing one over `max_bytes` before reading it whole."""
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise JSONLimitError(f"over the {max_bytes:,}-byte limit for a JSON file")
    return data


def read_json(path: Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file, bounded in size and depth (ValueError when over either, or not JSON)."""
    return parse_json(read_json_bytes(path, max_bytes=max_bytes), max_bytes=max_bytes, max_depth=max_depth)


_DAMAGED_RUN = "the run is damaged, start a new one with `qfactory train --recipe R`"


def read_run_parquet(run_dir: Path, relative: str) -> pl.DataFrame:
    """A parquet file a run wrote; a damaged one is a RunError (a missing one stays an OSError)."""
    from quant_cli.errors import RunError

    try:
        return pl.read_parquet(Path(run_dir) / relative)
    except pl.exceptions.ComputeError as exc:
        raise RunError(
            f"run {Path(run_dir).name}: {relative} is not a readable parquet file "
            f"({str(exc).splitlines()[0]}); {_DAMAGED_RUN}"
        ) from None


def read_run_json(run_dir: Path, relative: str) -> dict[str, Any]:
    """A JSON object a run wrote; a damaged one (edited, truncated by a full disk) is a RunError."""
    from quant_cli.errors import RunError

    damaged = _DAMAGED_RUN
    try:
        value = read_json(Path(run_dir) / relative)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise RunError(f"run {Path(run_dir).name}: {relative} is not valid JSON ({exc}); {damaged}") from None
    if not isinstance(value, dict):
        raise RunError(f"run {Path(run_dir).name}: {relative} is not a JSON object; {damaged}")
    return value


def write_parquet_atomic(path: Path, df: pl.DataFrame) -> None:
    tmp = _tmp_sibling(path)
    try:
        with storage_errors(path, own_name=False):  # polars: a ComputeError "... (os error 28)", not an OSError
            df.write_parquet(tmp, statistics=True)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that becomes `final` only if the block succeeds.

    `final` must not exist yet. On any exception the staging directory is removed, so a
    failed stage never leaves a half-written directory behind. A full disk (or a read-only or
    unwritable one) while the block writes into it is a StorageError naming `final`.
    """
    with storage_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    staging = new_temp_dir(final.parent, prefix=f"{STAGING_PREFIX}{final.name}-")
    try:
        with storage_errors(final):
            write_owner(staging)
            yield staging
            release_owner(staging)
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# Staging folders of a process that was killed stay behind. Each one holds an owner file with the
# pid and host that made it, so the next command can tell a dead writer's leftovers (removed)
# from a live writer's work in progress (never touched). Without a readable owner file — killed
# between mkdir and the owner write, or made elsewhere — only age decides.
STAGING_PREFIX = ".staging-"
OWNER_FILE = ".qfactory-owner.json"
ORPHAN_AGE_S = 3600  # no owner file (or another host's): stale after an hour without change
FOREIGN_AGE_S = 24 * 3600


def owner() -> dict[str, Any]:
    """This process, as owner files and a run's running-stage entries record it."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def write_owner(staging: Path) -> None:
    (Path(staging) / OWNER_FILE).write_text(json.dumps(owner()), encoding="utf-8")


def release_owner(staging: Path) -> None:
    """Drop the owner file just before the rename, so it never lands in the final folder."""
    (Path(staging) / OWNER_FILE).unlink(missing_ok=True)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove `.staging-*` folders in `folder` whose writer is gone; returns what was removed."""
    if not Path(folder).is_dir():
        return []
    removed = []
    for entry in Path(folder).iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink() and _is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_stale(staging: Path) -> bool:
    try:
        recorded = read_json(staging / OWNER_FILE)
    except (OSError, ValueError):
        recorded = None
    return owner_gone(recorded, _age(staging))


def owner_gone(recorded: Any, age_s: float) -> bool:
    """Whether the process an owner record ({pid, host}) names is gone. A record without a usable
    pid, or from another host (its pid means nothing here), is judged by its age alone."""
    try:
        pid, host = int(recorded["pid"]), str(recorded["host"])
    except (KeyError, TypeError, ValueError):
        return age_s > ORPHAN_AGE_S
    if host != socket.gethostname():
        return age_s > FOREIGN_AGE_S
    return not pid_alive(pid)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive but another user's (EPERM), or unknowable: never delete a live writer's work
    return True
