"""Running grid points on any `concurrent.futures.Executor`, resuming from the on-disk cache.

`run_points` skips points whose run document is cached, submits the rest to the executor, saves
each document as it arrives, and records a point that raises as failed with its error while the
rest go on. Executors: `SerialExecutor` (one job, in this process), a process pool (the default
for `--jobs N`), and `RayExecutor` (the `ray` extra: the cluster at RAY_ADDRESS, or a local one).
Any other Executor works too: a point is a plain dict in and a plain dict out.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

from scheduler.errors import ConfigError

from .points import Point, run_point
from .progress import Bar
from .store import Outcome, Store

EXECUTORS = ("process", "ray", "serial")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during run_points: `outcomes` says which points finished (their documents are saved)."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


class SerialExecutor(Executor):
    """Runs each call when it is submitted, in this process (`--jobs 1`)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # KeyboardInterrupt is not a point's failure: let it stop the run
            future.set_exception(exc)
        return future


class RayExecutor(Executor):
    """Tasks on a Ray cluster: the one at `address` or RAY_ADDRESS, else a new local one."""

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray: ray is not installed; pip install -e '.[ray]'") from None
        address = address if address is not None else os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            check_ray_address(address)
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         runtime_env=_ship_code() if address not in (None, "local") else None)
            except ConnectionError as err:
                raise ConfigError(f"--executor ray: cannot connect to the Ray cluster at {address!r}: {err}") from None
        self._task = ray.remote(_call)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        outer: Future = Future()

        def relay(inner: Future) -> None:
            error = inner.exception()
            if error is None:
                outer.set_result(inner.result())
            else:  # a RayTaskError wraps the task's own exception (and a remote traceback): unwrap it
                outer.set_exception(getattr(error, "cause", None) or error)

        self._task.remote(fn, *args, **kwargs).future().add_done_callback(relay)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _ship_code() -> dict:
    """A remote cluster may not have this project installed: send its packages with the tasks."""
    import benchmarks
    import scheduler
    import sim

    return {"py_modules": [os.path.dirname(m.__file__) for m in (scheduler, sim, benchmarks)]}


def check_ray_address(address: str) -> None:
    """Fail at once, naming the address, when nothing listens there (ray.init would retry a while)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS: expected host:port, ray://host:port, auto or local; got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3.0).close()
    except OSError as err:
        raise ConfigError(f"--executor ray: cannot reach a Ray cluster at {address!r} ({err.strerror or err}); "
                          "start one with `ray start --head`, or unset RAY_ADDRESS for a local cluster") from None


def make_executor(kind: str = "process", jobs: int | None = None) -> Executor:
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor: unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"--jobs: must be an integer >= 1, got {jobs!r}")
    if kind == "ray":
        return RayExecutor()
    if kind == "serial" or jobs == 1:
        return SerialExecutor()
    # spawn, not fork: the progress bar runs a thread, and forking a threaded process is unsafe.
    return ProcessPoolExecutor(jobs or os.cpu_count(), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_points(points: Sequence[Point], executor: Executor, store: Store, *, bar: Bar | None = None,
               fresh: bool = False, runner: Callable[[dict], dict] = run_point) -> list[Outcome]:
    """Run every point not cached in `store` (all of them with `fresh`) on `executor`.

    Returns one Outcome per point, in order. On KeyboardInterrupt the finished documents are
    already saved; the rest are cancelled and `Interrupted` (a KeyboardInterrupt) carries the
    outcomes so far.
    """
    bar = bar or Bar()
    outcomes = [Outcome(p, "pending") for p in points]
    by_key: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_key.setdefault(outcome.point.key, []).append(outcome)
    todo = []
    for key, group in by_key.items():
        doc = None if fresh else store.cached(key)
        if doc is None:
            todo.append(group[0].point)
        else:
            _settle(group, "cached", doc=doc)
            bar.advance(len(group))
    # A serial executor runs at submit time: submit one at a time so results are saved as they come.
    window = 1 if isinstance(executor, SerialExecutor) else max(1, len(todo))
    try:
        _drain(todo, executor, store, by_key, bar, window, runner)
    except KeyboardInterrupt as interrupt:
        raise Interrupted(outcomes) from interrupt
    return outcomes


def _drain(todo: list[Point], executor: Executor, store: Store, by_key: dict, bar: Bar, window: int,
           runner: Callable) -> None:
    queue, running = iter(todo), {}
    try:
        while True:
            for point in queue:
                running[executor.submit(runner, point.table)] = point
                if len(running) >= window:
                    break
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _finish(future, running.pop(future), store, by_key, bar)
    finally:
        for future in running:
            future.cancel()


def _finish(future: Future, point: Point, store: Store, by_key: dict, bar: Bar) -> None:
    group = by_key[point.key]
    error = future.exception()
    if error is not None:
        _settle(group, "failed", error=f"{type(error).__name__}: {error}")
    else:
        doc = future.result()
        store.save(point.key, doc)
        _settle(group, "ok", doc=doc)
    bar.advance(len(group))


def _settle(group: list[Outcome], status: str, doc: dict | None = None, error: str | None = None) -> None:
    for outcome in group:
        outcome.status, outcome.doc, outcome.error = status, doc, error
