"""Human output goes to stderr; stdout carries only what scripts consume (paths, JSON)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

T = TypeVar("T")


class _State:
    quiet = False


err = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def set_quiet(quiet: bool) -> None:
    _State.quiet = quiet


def info(message: str) -> None:
    if not _State.quiet:
        err.print(message, markup=False, soft_wrap=True)


def notice(message: str) -> None:
    """Something the user should know even though nothing failed (e.g. a skipped feature)."""
    if not _State.quiet:
        err.print(f"notice: {message}", markup=False, style="yellow", soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False, style="yellow", soft_wrap=True)


def progress_enabled() -> bool:
    return not _State.quiet and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A rich progress bar on stderr, silent when not a TTY or with --quiet."""
    if not progress_enabled():
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)


@contextmanager
def working(description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr for work without countable steps (a model fit).

    Silent when not a TTY or with --quiet, like `track`; it disappears when the work ends.
    """
    if not progress_enabled():
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        progress.add_task(description, total=None)
        yield
