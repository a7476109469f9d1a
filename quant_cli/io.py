"""Atomic file writes: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl


def new_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create an empty, uniquely named file in `folder` with the usual permissions.

    Unlike tempfile.mkstemp (always 0600), the mode is 0666 minus the process umask, so the
    file that is renamed into place is as readable as any file the user creates.
    """
    while True:
        tmp = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def new_temp_dir(folder: Path, prefix: str) -> Path:
    """Create an empty, uniquely named folder in `folder`: 0777 minus the umask (mkdtemp: 0700)."""
    while True:
        tmp = Path(folder) / f"{prefix}{secrets.token_hex(6)}"
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:
            continue


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return new_temp_file(path.parent, prefix=f".{path.name}.")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp_sibling(path)
    try:
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


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet_atomic(path: Path, df: pl.DataFrame) -> None:
    tmp = _tmp_sibling(path)
    try:
        df.write_parquet(tmp, statistics=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that becomes `final` only if the block succeeds.

    `final` must not exist yet. On any exception the staging directory is removed, so a
    failed stage never leaves a half-written directory behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = new_temp_dir(final.parent, prefix=f".staging-{final.name}-")
    try:
        yield staging
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
