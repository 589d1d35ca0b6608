"""The config value checks the whole TOML schema shares, and the bounds they enforce.

Every check returns the value it accepts or raises ConfigError with a message that names the key as
the user wrote it, what is wrong, and what is allowed (`shown` and `shown_bound` write the values
and bounds in those messages). The bounds (MAX_TOKENS, MAX_SECONDS, ...) keep arithmetic finite and
a run's time and memory in reach; the kinds (NUMBER, INTEGER, ...) are what schema tables and
error messages call the values a key takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from scheduler.errors import ConfigError

__all__ = [
    "BOOLEAN", "FACTOR", "INTEGER", "LENGTH", "LIST", "MAX_COUNT", "MAX_SECONDS", "MAX_TOKENS", "NUMBER",
    "STRING", "TABLE", "as_integer", "as_number", "at_least", "check_keys", "in_range", "is_int", "is_number",
    "seconds", "shown", "shown_bound", "token_count",
]

# ---------------------------------------------------------------------------------------------
# bounds of config values: past them arithmetic overflows, memory runs out, or a run outlasts
# anyone's patience; each is stated in the error that enforces it

MAX_TOKENS = 2**31 - 1  # a token count (prompt, output, max_new_tokens): beyond any context length
MAX_SECONDS = 365 * 86_400  # a span of virtual time (durations, on/off windows, SLOs): a year
MAX_COUNT = 2**63 - 1  # a cap on queued requests or tokens: what an int64 holds
FACTOR = (1e-6, 1e6)  # weights, shares and load: relative factors, six orders of magnitude each way

# The kinds of value a key takes, as error messages and the schema tables name them.
NUMBER, INTEGER, STRING, BOOLEAN, TABLE, LIST, LENGTH = (
    "number", "integer", "string", "boolean", "table", "list", "length")


# ---------------------------------------------------------------------------------------------
# small config helpers: every error names the key and what is allowed


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def shown(value, limit: int = 60) -> str:
    """A value as TOML writes it, cut to `limit` characters, for error messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif is_int(value):
        digits = int(value).bit_length() * 0.30103  # str() of a huge int is slow, and refused past 4,300 digits
        text = str(int(value)) if digits < limit else f"an integer of {digits:,.0f} digits"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(shown(v, limit) for v in value[:limit // 2]) + "]"
    elif isinstance(value, Mapping):
        text = "{ " + ", ".join(f"{k} = {shown(v, limit)}" for k, v in list(value.items())[:limit // 4]) + " }"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        text = str(int(value))  # 2.0 may have been written 2: the messages compare it with integer bounds
    elif hasattr(value, "isoformat"):  # TOML dates and times
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown_bound(x: float) -> str:
    """A bound as the messages state it: 2^k - 1 for the widest integers, other integers with
    thousands separators, floats in %g unless they are small whole numbers."""
    if is_int(x):
        x = int(x)
        return f"2^{x.bit_length()} - 1" if x.bit_length() >= 60 and x & (x + 1) == 0 else f"{x:,}"
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e7 else f"{x:g}"


def as_number(value, key: str, rule: str = "") -> float:
    try:
        x = float(value) if is_number(value) else math.nan
    except OverflowError:  # an integer beyond any float
        x = math.inf
    if not math.isfinite(x):
        raise ConfigError(f"{key}: must be a finite number{' ' + rule if rule else ''}, got {shown(value)}")
    return x


def as_integer(value, key: str, rule: str = "") -> int:
    if not is_int(value):
        raise ConfigError(f"{key}: must be an integer{' ' + rule if rule else ''}, got {shown(value)}")
    return int(value)


def in_range(value, key: str, low: float, high: float, *, integer: bool = False, open_low: bool = False):
    """`value` if it is a number (an integer if `integer`) in [low, high], or (low, high] if `open_low`."""
    rule = f"in {'(' if open_low else '['}{shown_bound(low)}, {shown_bound(high)}]"
    x = as_integer(value, key, rule) if integer else as_number(value, key, rule)
    if not (low < x if open_low else low <= x) or not x <= high:
        raise ConfigError(f"{key}: must be {'an integer' if integer else 'a number'} {rule}, got {shown(value)}")
    return x


def at_least(value, key: str, bound: float, *, strict: bool) -> float:
    """`value` if it is a finite number >= bound (> bound if `strict`)."""
    op = ">" if strict else ">="
    x = as_number(value, key, f"{op} {bound:g}")
    if x < bound or (strict and x == bound):
        raise ConfigError(f"{key}: must be {op} {bound:g}, got {x:g}")
    return x


def token_count(value, key: str) -> int:
    """A token count: an integer in [1, MAX_TOKENS]."""
    return in_range(value, key, 1, MAX_TOKENS, integer=True)


def seconds(value, key: str) -> float:
    """A span of virtual time in seconds: (0, MAX_SECONDS], a year."""
    return in_range(value, key, 0, MAX_SECONDS, open_low=True)


def check_keys(table: Mapping, allowed: Sequence[str], key: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}: unknown key {shown(unknown[0])}; allowed keys: {', '.join(allowed)}")
