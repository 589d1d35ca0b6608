"""A serving process's timeline trace: what it keeps (`TraceFile`: the path, a time window, the
first N requests) and writing it when the process stops.

The recorder is scheduler.trace's, fed by the `Runtime`; this module bounds it and writes it. The
file is written atomically (a temporary file in the same folder, then a rename), so a reader never
sees half a trace and a write that fails leaves any earlier file as it was. Errors name the
`fairbatch serve` flag, `--trace`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Iterable, Sequence

from scheduler.errors import ConfigError
from scheduler.trace import TraceRecorder

ALLOWED = "allowed: a file path in an existing folder this user may write"


class FirstRequests:
    """The ids of the first `count` requests asked about: a server's sample of requests, since it
    cannot know how many will come. It holds at most `count` ids."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._kept: set[Hashable] = set()

    def __contains__(self, request_id: object) -> bool:
        if request_id in self._kept:
            return True
        if len(self._kept) < self.count:
            self._kept.add(request_id)
            return True
        return False


@dataclass(frozen=True, slots=True)
class TraceFile:
    """Where a server's trace goes, and what it keeps: the steps, samples and requests overlapping
    `window` (seconds since the server started; None: all) and of those, the first `requests`
    requests' slices and flows (None: all)."""

    path: Path
    window: tuple[float, float] | None = None
    requests: int | None = None

    def recorder(self, tenants: Sequence[str], workers: Iterable[int]) -> TraceRecorder:
        sample = None if self.requests is None else FirstRequests(self.requests)
        return TraceRecorder(tenants, workers, window=self.window, requests=sample)

    def check(self) -> None:
        """Refuse, before serving rather than at shutdown, a path the trace could not be written to."""
        path, folder = self.path, self.path.parent
        if path.is_dir():
            raise ConfigError(f"--trace: {path} is a directory; {ALLOWED}")
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise ConfigError(f"--trace: cannot write {path}: its folder {folder} {what}; {ALLOWED}")
        try:  # the very file a write starts with: permissions, a read-only file system, ...
            fd, temp = _open_temp(path)
            os.close(fd)
            os.unlink(temp)
        except OSError as err:
            raise ConfigError(f"--trace: cannot write {path}: {err.strerror or err}; {ALLOWED}") from None

    def write(self, recorder: TraceRecorder) -> None:
        try:
            write_atomically(self.path, recorder.to_json())
        except OSError as err:
            raise ConfigError(f"--trace: cannot write {self.path}: {err.strerror or err}") from None


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it to `path`."""
    fd, temp = _open_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename: a crash cannot leave an empty file under the name
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _open_temp(path: Path) -> tuple[int, str]:
    # os.open rather than tempfile.mkstemp: mode 0o666 under the umask gives the file the
    # permissions any other file written here would have (mkstemp's are 0o600).
    temp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
