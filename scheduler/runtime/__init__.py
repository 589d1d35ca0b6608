"""The anyio runtime: the only part of fairbatch that imports anyio.

`Runtime` drives the sans-IO core in real (or virtual) time inside a task group, with one loop
per `Worker`; `submit` returns a `RequestHandle` that streams tokens. `SimulatedWorker` prices
steps with a cost model. The OpenAI-compatible HTTP app is in `scheduler.runtime.server`
(it needs the `serve` extra).
"""

from .driver import Runtime
from .handle import RequestCancelled, RequestHandle, RequestRejected
from .worker import Job, SimPrompt, SimulatedWorker, Step, StepDone, Worker, synthetic_token

__all__ = [
    "Job",
    "RequestCancelled",
    "RequestHandle",
    "RequestRejected",
    "Runtime",
    "SimPrompt",
    "SimulatedWorker",
    "Step",
    "StepDone",
    "Worker",
    "synthetic_token",
]
