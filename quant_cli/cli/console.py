"""Human output goes to stderr; stdout carries only what scripts consume (paths, JSON)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from quant_cli.report import Reporter

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


# One live display at a time: rich refuses a second one (before 14.1), and a progress bar inside
# a spinner (a feature build inside the split step) is common, so nested calls add a task to the
# display that is already running instead of opening their own.
_COLUMNS = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


class _Live:
    progress: Progress | None = None


@contextmanager
def _task(description: str, total: int | None) -> Iterator[tuple[Progress, TaskID]]:
    opened = _Live.progress is None
    if opened:
        _Live.progress = Progress(*_COLUMNS, console=err, transient=True)
        _Live.progress.start()
    progress = _Live.progress
    task = progress.add_task(description, total=total)
    try:
        yield progress, task
    finally:
        progress.remove_task(task)
        if opened:
            progress.stop()
            _Live.progress = None


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A rich progress bar on stderr, silent when not a TTY or with --quiet."""
    if not progress_enabled():
        yield from items
        return
    with _task(description, total) as (progress, task):
        for item in items:
            yield item
            progress.advance(task)


@contextmanager
def working(description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr for work without countable steps (a model fit).

    Silent when not a TTY or with --quiet, like `track`; it disappears when the work ends.
    """
    if not progress_enabled():
        yield
        return
    with _task(description, None):
        yield


class ConsoleReporter(Reporter):
    """The library's reporter for a CLI command: rich output on stderr, honouring --quiet."""

    def info(self, message: str) -> None:
        info(message)

    def notice(self, message: str) -> None:
        notice(message)

    def warn(self, message: str) -> None:
        warn(message)

    def working(self, description: str):
        return working(description)

    def track(self, items, description: str, total: int | None = None):
        return track(items, description, total)


REPORTER = ConsoleReporter()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """Plain aligned columns (headers: the column names in capitals unless given; None shows as '-'):
    readable in a terminal and easy to cut/awk in scripts. Every listing of the CLI renders here."""
    heads = [str(c).upper() for c in columns] if headers is None else list(headers)
    cells = [heads] + [["-" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells)
