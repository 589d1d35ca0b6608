"""The progress bar of long benchmark commands: rich on stderr, with ETA; silent when disabled or
when rich (the `progress` extra) is not installed. The simulator and the core never print."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Bar:
    """What a command reports to: a bar or nothing."""

    def advance(self, steps: int = 1) -> None:
        pass

    def grow(self, steps: int) -> None:
        """More work than first announced (a capacity search adds probes as it goes)."""


class _RichBar(Bar):
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)

    def grow(self, steps: int) -> None:
        total = self._progress.tasks[self._task].total or 0
        self._progress.update(self._task, total=total + steps)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Bar]:
    """A bar over `total` steps on stderr, or a silent Bar when disabled or without rich."""
    try:
        from rich import progress as rp
        from rich.console import Console
    except ImportError:
        enabled = False
    if not enabled:
        yield Bar()
        return
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
               rp.TextColumn("elapsed"), rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn())
    with rp.Progress(*columns, console=Console(file=sys.stderr)) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))
