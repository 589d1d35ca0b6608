"""One benchmark command's run: its executor, store and progress bar, and what it writes at the
end (the manifest and the CSV), also when interrupted so a rerun resumes from the cache."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

from .points import Point, run_point
from .progress import progress_bar
from .runner import Interrupted, make_executor, run_points
from .store import Outcome, Store


class Session:
    """Use as a context manager; `run(points)` may be called several times (capacity rounds)."""

    def __init__(self, command: str, out: str | Path, *, cache: str | Path | None = None,
                 executor: str = "process", jobs: int | None = None, fresh: bool = False,
                 progress: bool = True, total: int = 0, description: str | None = None,
                 runner: Callable[[dict], dict] = run_point) -> None:
        self.command = command
        self.runner = runner
        self.store = Store(out, cache)
        self.fresh = fresh
        self.outcomes: list[Outcome] = []
        self.extra: dict[str, Any] = {}  # more manifest fields (the capacity results, the grid)
        self._executor_args = (executor, jobs)
        self._bar_args = (total, description or command, progress)
        self._stack = ExitStack()

    def __enter__(self) -> Session:
        self.executor = make_executor(*self._executor_args)  # a bad executor fails before any work
        self.bar = self._stack.enter_context(progress_bar(*self._bar_args))
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self._stack.close()
            # Interrupted: do not wait for the points still running, their results are not kept.
            self.executor.shutdown(wait=exc_type is None, cancel_futures=True)
        finally:
            self.store.write_manifest(self.command, self.outcomes, **self.extra)
            self.store.write_csv(self.outcomes)

    def run(self, points: Sequence[Point]) -> list[Outcome]:
        try:
            outcomes = run_points(points, self.executor, self.store, bar=self.bar, fresh=self.fresh,
                                  runner=self.runner)
        except Interrupted as interrupt:
            self.outcomes += interrupt.outcomes
            raise
        self.outcomes += outcomes
        return outcomes

    def counts(self) -> dict[str, int]:
        statuses = [o.status for o in self.outcomes]
        return {s: statuses.count(s) for s in ("ok", "cached", "failed", "pending")}
