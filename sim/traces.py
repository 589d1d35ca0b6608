"""Reading the supported trace formats: Azure LLM 2023 CSV, Mooncake JSONL and Vidur lengths CSV,
each plain or gzipped, detected from the first line.

`read_trace` gives a `Trace` of read-only arrays, cached per file version so that tenants sharing a
file parse it once; a missing file, an unknown format or a malformed row raises `TraceError` naming
the file and the line. A Mooncake row's `hash_ids` (one id per 512-token block of its prompt)
become its `Prefix`, so replaying the trace shares KV blocks as the traffic did.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import gzip
import itertools
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler.errors import ConfigError
from scheduler.prefix import Prefix

from .validation import MAX_SECONDS, MAX_TOKENS, is_number, shown

__all__ = ["MOONCAKE_BLOCK", "Trace", "TraceError", "read_trace"]

MOONCAKE_BLOCK = 512  # tokens per hash id in the Mooncake traces


class TraceError(ConfigError):
    """A trace file is missing, of an unknown format, or has a malformed row.

    `path` and `line` (1-based, None when the error is about the whole file) are kept as attributes;
    the message always names the file, and the line when there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None):
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """A parsed trace; arrays are read-only because parsed traces are cached and shared.

    Token counts are clamped to >= 1: a request that generates nothing still has a first token in
    every engine's metrics (and a prompt always has at least one token). `arrival_s` counts from the
    trace's earliest request; row order is kept as in the file. `prefixes` is None unless rows carry
    Mooncake `hash_ids`; then it holds each row's `Prefix(hash_ids, MOONCAKE_BLOCK)`, or None for a
    row without them (or with an empty prompt).
    """

    path: str
    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefixes: tuple[Prefix | None, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompt_tokens)


_ABSENT = ()  # a row without hash_ids (json gives lists, never tuples, so it is told apart from [])
_AZURE_COLUMNS = ("timestamp", "contexttokens", "generatedtokens")
_VIDUR_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
_MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
_EXPECTED = (
    "expected an Azure LLM 2023 CSV (TIMESTAMP,ContextTokens,GeneratedTokens), a Vidur lengths CSV "
    "(num_prefill_tokens,num_decode_tokens,...) or Mooncake JSONL "
    '({"timestamp", "input_length", "output_length", "hash_ids"})'
)


def read_trace(path) -> Trace:
    """Read a trace, plain or gzipped; the format is detected from its first line.

    Parsed traces are cached per (resolved path, mtime, size), so tenants sharing a file parse it once.
    """
    resolved = Path(os.fspath(path)).expanduser().resolve()
    try:
        st = resolved.stat()
    except OSError as exc:
        raise TraceError(f"cannot read trace file: {exc.strerror or exc}", path=resolved) from None
    if not resolved.is_file():
        raise TraceError("not a regular file", path=resolved)
    return _read_trace_cached(str(resolved), st.st_mtime_ns, st.st_size)



@functools.lru_cache(maxsize=8)
def _read_trace_cached(path: str, mtime_ns: int, size: int) -> Trace:
    try:
        lines = _decode(path).splitlines()
    except UnicodeDecodeError as exc:
        raise TraceError(f"not UTF-8 text (byte {exc.start}); {_EXPECTED}", path=path) from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError without a strerror
        raise TraceError(f"cannot read trace file: {getattr(exc, 'strerror', None) or exc}", path=path) from None
    with _gc_paused():
        return _parse(path, lines)


@contextlib.contextmanager
def _gc_paused():
    """Parsing allocates ~10^5 short-lived containers (Mooncake's hash_id lists); the cyclic GC
    would rescan them many times over (3x the parse time). None of them form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(path: str, lines: list[str]) -> Trace:
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise TraceError(f"empty file; {_EXPECTED}", path=path)
    head = lines[first].lstrip("\ufeff").strip()
    if head.startswith("{"):
        trace = _parse_mooncake(path, lines)
    else:
        trace = _parse_csv(path, lines[first:], head, first)
    if len(trace) == 0:
        raise TraceError("no requests after the header", path=path)
    for array in (trace.arrival_s, trace.prompt_tokens, trace.output_tokens):
        if array is not None:
            array.flags.writeable = False
    return trace


def _decode(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic: detect by content, not by the file's suffix
        data = gzip.decompress(data)
    return data.decode("utf-8")


def _parse_csv(path: str, lines: list[str], head: str, skipped: int) -> Trace:
    """`lines` start at the header; `skipped` blank lines came before it (for line numbers)."""
    reader = csv.reader(lines)
    header = [h.lstrip("\ufeff").strip().lower() for h in next(reader)]
    if all(c in header for c in _AZURE_COLUMNS):
        columns, kind = _AZURE_COLUMNS, "azure"
    elif all(c in header for c in _VIDUR_COLUMNS):
        columns, kind = _VIDUR_COLUMNS, "vidur"
    else:
        raise TraceError(f"unknown format, header {head[:120]!r}; {_EXPECTED}", path=path, line=skipped + 1)
    index = [header.index(c) for c in columns]
    width = max(index) + 1
    body = list(reader)  # one element of `lines` per row: these numeric formats quote no newlines
    keep = [k for k, row in enumerate(body) if row and (len(row) > 1 or row[0].strip())]
    rows = [body[k] for k in keep]
    line_nos = [skipped + 2 + k for k in keep]
    short = next((j for j, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        got = len(rows[short])
        raise TraceError(f"expected {len(header)} fields, got {got}", path=path, line=line_nos[short])
    cols = [[row[i] for row in rows] for i in index]
    if kind == "azure":
        arrival = _timestamps(path, cols[0], line_nos)
        prompt = _token_column(path, cols[1], line_nos, "ContextTokens")
        output = _token_column(path, cols[2], line_nos, "GeneratedTokens")
        return Trace(path, arrival, prompt, output, None)
    prompt = _token_column(path, cols[0], line_nos, "num_prefill_tokens")
    output = _token_column(path, cols[1], line_nos, "num_decode_tokens")
    return Trace(path, None, prompt, output, None)


def _timestamps(path: str, texts: list[str], line_nos: list[int]) -> np.ndarray:
    """Wall-clock strings -> float64 seconds from the earliest.

    numpy parses ISO strings in C; Azure writes 7 fractional digits (100 ns) and datetime64[us]
    wants at most 6, so the 7th is dropped: 0.1 us is far below any scheduling effect.
    """
    stripped = [t.strip() for t in texts]
    trimmed = [t[: d + 7] if (d := t.rfind(".")) >= 0 else t for t in stripped]
    try:
        stamps = np.array(trimmed, dtype="datetime64[us]")
    except ValueError:
        for text, line in zip(trimmed, line_nos):
            try:
                np.datetime64(text, "us")
            except ValueError:
                raise TraceError(f"bad TIMESTAMP {text!r}", path=path, line=line) from None
        raise
    if len(stamps) == 0:
        return np.zeros(0, dtype=np.float64)
    bad = np.flatnonzero(np.isnat(stamps))  # numpy reads "NaT" and "" as not-a-time
    if len(bad):
        raise TraceError(f"bad TIMESTAMP {texts[bad[0]]!r}", path=path, line=line_nos[bad[0]])
    micros = stamps.astype(np.int64)
    return _span_checked((micros - micros.min()).astype(np.float64) / 1e6, line_nos, path, "TIMESTAMP")


def _token_column(path: str, texts: list[str], line_nos: list[int], name: str) -> np.ndarray:
    try:
        counts = list(map(int, texts))
    except ValueError:  # slow path: find the line, or accept integral floats
        counts = [_parse_count(t, path, ln, name) for t, ln in zip(texts, line_nos)]
    return _count_array(counts, line_nos, path, name)


def _count_array(counts: list[int], line_nos: list[int], path: str, name: str) -> np.ndarray:
    """Token counts as int64, clamped to >= 1; one outside [0, MAX_TOKENS] is an error naming its line."""
    if counts and not 0 <= min(counts) <= max(counts) <= MAX_TOKENS:  # checked before int64 could overflow
        k = next(k for k, c in enumerate(counts) if not 0 <= c <= MAX_TOKENS)
        raise TraceError(f"{name}: must be a token count in [0, {MAX_TOKENS:,}], got {shown(counts[k])}",
                         path=path, line=line_nos[k])
    return np.maximum(np.array(counts, dtype=np.int64), 1)


def _parse_count(text: str, path: str, line: int, name: str) -> int:
    """A token count; integral floats such as "12.0" are accepted (some exports write them)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x != int(x):
        raise TraceError(f"{name}: expected an integer token count, got {shown(text)}", path=path, line=line)
    return int(x)


def _parse_mooncake(path: str, lines: list[str]) -> Trace:
    numbered = [(k, line) for k, line in enumerate(lines, start=1) if line.strip()]
    line_nos = [k for k, _ in numbered]
    columns = _mooncake_fast(numbered)
    if columns is None:  # something is malformed: check row by row to name the line
        for k, line in numbered:
            _mooncake_row(path, k, line)
        raise TraceError("malformed JSONL trace", path=path)
    stamps, prompt, output, hashes = columns
    arrival = _span_checked(np.array(stamps, dtype=np.float64) / 1000.0, line_nos, path, "timestamp")
    prompt_a = _count_array(prompt, line_nos, path, "input_length")
    output_a = _count_array(output, line_nos, path, "output_length")
    prefixes = _mooncake_prefixes(path, hashes, prompt, line_nos)
    return Trace(path, arrival, prompt_a, output_a, prefixes if any(prefixes) else None)


def _mooncake_prefixes(path: str, hashes: tuple, prompt: list[int], line_nos: list[int]) -> tuple:
    """Each row's Prefix: None without hash_ids (or with none for an empty prompt, whose one token
    after clamping has no content to share); a list that does not cover the prompt names its line."""
    out = []
    for ids, length, line in zip(hashes, prompt, line_nos):
        if ids is None:
            out.append(None)
            continue
        prefix = Prefix(ids, MOONCAKE_BLOCK)
        try:
            prefix.check(length, "hash_ids")
        except ConfigError as err:
            raise TraceError(f"{err.args[0]} (input_length {length:,})", path=path, line=line) from None
        out.append(prefix if ids else None)
    return tuple(out)


def _span_checked(seconds: np.ndarray, line_nos: list[int], path: str, name: str) -> np.ndarray:
    """Arrival times counted from the earliest; a trace longer than MAX_SECONDS names its first row past it."""
    if len(seconds) == 0:
        return seconds
    arrival = seconds - seconds.min()
    late = np.flatnonzero(arrival > MAX_SECONDS)
    if len(late):
        raise TraceError(f"{name}: the trace must span at most {MAX_SECONDS:,} s (a year) of arrivals, "
                         f"this row comes {arrival[late[0]]:g} s after the first", path=path, line=line_nos[late[0]])
    return arrival


def _mooncake_fast(numbered: list[tuple[int, str]]):
    """Columns of a well-formed JSONL trace, or None if any row is malformed.

    One json.loads over the whole file and type checks through map() run in C: 3x faster than
    a Python check per row and per hash id.
    """
    try:
        rows = json.loads("[" + ",".join(line for _, line in numbered) + "]")
        if len(rows) != len(numbered):  # two objects on one line
            return None
        stamps = [r["timestamp"] for r in rows]
        prompt = [r["input_length"] for r in rows]
        output = [r["output_length"] for r in rows]
        ids = [r.get("hash_ids", _ABSENT) for r in rows]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not set(map(type, stamps)) <= {int, float} or not all(map(math.isfinite, stamps)):
        return None
    if not set(map(type, prompt)) | set(map(type, output)) <= {int}:
        return None
    if not set(map(type, ids)) <= {list, tuple} or not set(map(type, itertools.chain.from_iterable(ids))) <= {int}:
        return None
    return stamps, prompt, output, tuple(None if i is _ABSENT else tuple(i) for i in ids)


def _mooncake_row(path: str, line_no: int, line: str) -> tuple[float, int, int, tuple]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"invalid JSON: {exc.msg}", path=path, line=line_no) from None
    if not isinstance(row, dict) or not all(k in row for k in _MOONCAKE_KEYS):
        got = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise TraceError(f"expected keys {', '.join(_MOONCAKE_KEYS)}; got {got}", path=path, line=line_no)
    ts = row["timestamp"]
    if not is_number(ts) or not math.isfinite(ts):
        raise TraceError(f"timestamp: expected a number of ms, got {ts!r}", path=path, line=line_no)
    counts = []
    for key in ("input_length", "output_length"):
        if type(row[key]) is not int:  # json gives int or float; bool is excluded by `is`
            raise TraceError(f"{key}: expected an integer, got {row[key]!r}", path=path, line=line_no)
        counts.append(row[key])
    ids = row.get("hash_ids", [])
    if type(ids) is not list or not set(map(type, ids)) <= {int}:
        raise TraceError("hash_ids: expected a list of integers", path=path, line=line_no)
    return float(ts), counts[0], counts[1], tuple(ids)
