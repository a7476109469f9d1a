"""How the library tells people what it is doing, without printing.

Stages and library functions take a `Reporter` and call it; they never write to stdout or
stderr themselves. The CLI passes a reporter backed by the rich console on stderr
(`quant_cli.cli.console.ConsoleReporter`); tests pass a `CollectingReporter` and read
`.messages`; a worker process (a future Ray task) passes whatever forwards to its driver. The
base class is silent, which is also the default of library functions called from code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class Reporter:
    """Silent reporter: the interface every reporter implements."""

    def info(self, message: str) -> None:
        """Progress worth a line: what a step did, counts, where it wrote."""

    def notice(self, message: str) -> None:
        """Something the user should know although nothing failed (a skipped feature)."""

    def warn(self, message: str) -> None:
        """A fallback that changes the result's meaning (no GPU: trained on CPU)."""

    @contextmanager
    def working(self, description: str) -> Iterator[None]:
        """Work without countable steps (a model fit); a console shows a spinner."""
        yield

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Countable work; a console shows a progress bar."""
        yield from items


SILENT = Reporter()


class CollectingReporter(Reporter):
    """Keeps every message as (level, text): for tests and for forwarding from workers."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def notice(self, message: str) -> None:
        self.messages.append(("notice", message))

    def warn(self, message: str) -> None:
        self.messages.append(("warning", message))

    def texts(self, level: str | None = None) -> list[str]:
        return [text for kind, text in self.messages if level is None or kind == level]
