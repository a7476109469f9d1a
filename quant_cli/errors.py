"""One error hierarchy. Bad input maps to exit code 2, anything else to 1.

Messages are one line: what was wrong (naming the parameter or file), what was received,
and how to fix it.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
from collections.abc import Iterable


class QFactoryError(Exception):
    """Base class. `exit_code` 2 means the user's input was bad."""

    exit_code = 2


class RecipeError(QFactoryError):
    """A recipe file, an `extends` chain or a `--set` override is invalid."""


class DataError(QFactoryError):
    """Input bars, a source file or a data store is missing or invalid."""


class RunError(QFactoryError):
    """A run directory cannot be found, or lacks what a stage needs."""


class ModelError(QFactoryError):
    """Unknown model, bad model parameters, or a model used before it was fitted."""


class BundleError(QFactoryError):
    """A bundle is missing, corrupt or does not match its manifest."""


class StorageError(QFactoryError):
    """A file or folder cannot be written or read: permission denied, read-only file system, disk full."""


_PERMISSIONS = "check the path and its permissions (--data-dir, --runs-dir, --source, --recipe), or pass another one"
# Storage failures a user fixes at the path (disk full, read-only, permissions): errno -> the fix.
STORAGE_FIXES = {
    errno.EACCES: _PERMISSIONS,
    errno.EPERM: _PERMISSIONS,
    errno.EROFS: "the file system is read-only; pass a writable --runs-dir / --data-dir",
    errno.ENOSPC: "free disk space there, or pass a --runs-dir / --data-dir on another disk",
    errno.EDQUOT: "free space within your disk quota, or pass a --runs-dir / --data-dir elsewhere",
}
# Native libraries report these in their own exception types, with the errno only in the message:
# polars and deltalake (Rust) say "(os error 28)"; SQLite (Optuna's study) says "database or disk is full".
_NATIVE_ERRNO = re.compile(r"os error (\d+)")
_NATIVE_REASONS = {
    "no space left on device": errno.ENOSPC,
    "database or disk is full": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "readonly database": errno.EROFS,
    "permission denied": errno.EACCES,
}


def os_errno(exc: BaseException) -> int | None:
    """The errno of an OS failure, also when a native library wrapped it in its own exception type."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    text = str(exc)
    if found := _NATIVE_ERRNO.search(text):
        return int(found.group(1))
    lowered = text.lower()
    return next((code for reason, code in _NATIVE_REASONS.items() if reason in lowered), None)


def storage_error(exc: BaseException, path: object, *, own_name: bool = True) -> StorageError | None:
    """`exc` as a one-line StorageError naming the path, when it is a disk-full, read-only or permission
    failure (else None). With `own_name`, an OSError that names its own file is reported at that file."""
    code = os_errno(exc)
    if code not in STORAGE_FIXES:
        return None
    named = getattr(exc, "filename", None) if own_name else None
    return StorageError(f"{named if named is not None else path}: {os.strerror(code).lower()}; {STORAGE_FIXES[code]}")


def suggest(received: str, allowed: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest allowed name, or ""."""
    match = difflib.get_close_matches(str(received), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_of(allowed: Iterable[str]) -> str:
    return ", ".join(repr(a) for a in allowed)


def shown(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters with an ellipsis: messages never echo huge input in full."""
    return clipped(repr(value), limit)


def clipped(text: str, limit: int = 80) -> str:
    """Plain text (a key name, a --set item) cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


_HUGE_TOKEN = re.compile(r"\S{200,}")


def clip_huge_values(message: str, limit: int = 80) -> str:
    """Safety net for messages built without `shown`: any run of 200+ non-space characters (an
    echoed 100,000-character name) is cut to `limit` characters with an ellipsis."""
    return _HUGE_TOKEN.sub(lambda m: clipped(m.group(0), limit), message)
