"""Service: what a tenant has received, the one definition everything reads.

A tenant's service is w_p x prompt tokens processed (recompute excluded) + w_cached x prompt
tokens found in the prefix cache + w_q x output tokens generated, and its normalised service that
divided by the tenant's weight (DESIGN, "Policies").

A cached token costs the engine far less than a computed one: no linear layers, only its KV read
by the attention of the tokens after it. w_cached = 0.1 by default, a tenth of w_p, the ratio at
which providers price cached input (Anthropic's cache reads are billed at 10% of base input
tokens: docs.anthropic.com, "Prompt caching"), so a tenant whose prompts hit the cache is
charged for what it costs the pool, and sharing a system prompt is rewarded, not free.
`ServiceWeights` holds w_p and w_q, and `service` computes it (on numbers or numpy arrays alike).
Fair policies read service from the core's `scheduler.ledger.Ledger`, the results and the metrics
compute it with `service`, so none of them can use weights or counts the others do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class ServiceWeights:
    """The cost of one prompt token processed (w_p), of one output token generated (w_q) and of
    one prompt token found in the prefix cache (w_cached)."""

    prompt: float = 1.0
    output: float = 2.0
    cached: float = 0.1

    def __post_init__(self) -> None:
        for name, value in (("w_p", self.prompt), ("w_q", self.output), ("w_cached", self.cached)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"scheduler.service_weights: {name} must be a number >= 0, got {value!r}")

    def as_list(self) -> list[float]:
        return [float(self.prompt), float(self.output), float(self.cached)]

    def of_prompt(self, prompt_tokens: int, cached_tokens: int) -> float:
        """A prompt's cost: its computed tokens at w_p, its cached ones at w_cached."""
        return self.prompt * (prompt_tokens - cached_tokens) + self.cached * cached_tokens


def service(weights: ServiceWeights, prompt_tokens, output_tokens, tenant_weight=1.0, cached_tokens=0):
    """w_p x prompt tokens + w_q x output tokens + w_cached x cached tokens, over the tenant's
    weight (numbers or arrays)."""
    return (weights.prompt * prompt_tokens + weights.output * output_tokens
            + weights.cached * cached_tokens) / tenant_weight
