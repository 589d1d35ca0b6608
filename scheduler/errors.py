"""Errors, split by whose fault they are.

ConfigError: the user's configuration or input data is wrong (names the key and the allowed range).
ProtocolError: the caller drove the core out of contract (plan twice, complete with no plan).
WorkerError: a worker reported something impossible (a token for a request it was not given).
"""


class FairbatchError(Exception):
    """Base of every error fairbatch raises on purpose."""


class ConfigError(FairbatchError, ValueError):
    """A configuration key or input value is outside what is allowed."""


class ProtocolError(FairbatchError, RuntimeError):
    """The caller misused the core's contract."""


class WorkerError(FairbatchError, RuntimeError):
    """A worker's report contradicts what it was asked to run."""
