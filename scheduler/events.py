"""What workers report back to the core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass(frozen=True, slots=True)
class StepResult:
    """A worker ran `steps` more steps of its plan (at most what is left of `plan.repeat`).

    `eos` names the requests whose last sampled token was end-of-sequence. With steps > 1 the
    driver must stop the run at the first EOS, so EOS can only fall on the last step.
    `final=False` reports progress of a multi-step run that goes on (tokens stream as they come);
    the plan stays in flight, and EOS must wait for the final report.
    """

    steps: int = 1
    eos: frozenset[Hashable] = field(default_factory=frozenset)
    final: bool = True
