"""One error hierarchy. Bad input maps to exit code 2, anything else to 1.

Messages are one line: what was wrong (naming the parameter or file), what was received,
and how to fix it.
"""

from __future__ import annotations

import difflib
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
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


_HUGE_TOKEN = re.compile(r"\S{200,}")


def clip_huge_values(message: str, limit: int = 80) -> str:
    """Safety net for messages built without `shown`: any run of 200+ non-space characters (an
    echoed 100,000-character name) is cut to `limit` characters with an ellipsis."""
    return _HUGE_TOKEN.sub(lambda m: clipped(m.group(0), limit), message)
