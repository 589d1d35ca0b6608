"""The simulator's side of the timeline trace (the recorder is scheduler.trace's, which the
serving runtime shares): what to trace (`TraceSpec`: a time window, a sample of requests), the
`--trace-window` and `--trace-requests` values, and writing the file.

The sample is drawn with its own numpy Generator seeded by the run's seed (and a fixed tag, so it
is not the workload's stream), so the same config and seed give the same trace, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from scheduler.errors import ConfigError
from scheduler.trace import TraceRecorder

SAMPLE_TAG = 0x7ACE  # mixed into the seed of the request sample


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """What a run's trace keeps: steps and samples in `window` (start, end seconds; None: all) and
    the requests of a uniform sample of `requests` of them (None: all)."""

    window: tuple[float, float] | None = None
    requests: int | None = None

    def recorder(self, tenants: Sequence[str], n_requests: int, workers: Iterable[int], seed: int) -> TraceRecorder:
        return TraceRecorder(tenants, workers, window=self.window, requests=self.sample(n_requests, seed))

    def sample(self, n_requests: int, seed: int) -> frozenset[int] | None:
        """The ids (workload indices) of the requests kept; None when all are."""
        if self.requests is None or self.requests >= n_requests:
            return None
        rng = np.random.default_rng([seed, SAMPLE_TAG])
        return frozenset(rng.choice(n_requests, size=self.requests, replace=False).tolist())


def parse_window(text: str, flag: str = "--trace-window") -> tuple[float, float]:
    """'START:END' in seconds of simulated time, 0 <= START < END."""
    start, sep, end = text.partition(":")
    try:
        window = (float(start), float(end)) if sep else None
    except ValueError:
        window = None
    if window is None or not all(math.isfinite(x) for x in window):
        raise ConfigError(f"{flag}: must be START:END in seconds (e.g. 10:12), got {text!r}")
    if not 0 <= window[0] < window[1]:
        raise ConfigError(f"{flag}: must have 0 <= START < END, got {text!r}")
    return window


def check_requests(count: int | None, flag: str = "--trace-requests") -> None:
    if count is not None and count < 1:
        raise ConfigError(f"{flag}: must be an integer >= 1 (requests sampled), got {count}")


def check_window_in_run(window: tuple[float, float] | None, end_s: float, flag: str = "--trace-window") -> None:
    """A window that starts after the run's last event would write an empty trace: refuse it."""
    if window is not None and window[0] > end_s:
        raise ConfigError(f"{flag}: {window[0]:g}:{window[1]:g} starts after the run, which ends at {end_s:.3f} s; "
                          f"allowed: a START in [0, {end_s:.3f}]")


def write_text(path: Path, text: str, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot write {path}: {err.strerror or err}") from None
