"""The `Ledger`: the per-tenant counts the core keeps whatever the policy (queued and running
requests, prompt tokens processed or found cached, output tokens generated) and each tenant's
service from them, by `scheduler.service.service`.

Output tokens of decoding requests are settled lazily: a tenant's count is what has been settled
plus what its decode sets generated since, a running total `decodeset.DecodingTenants` keeps, so
a count is read in O(1) whatever the number of workers the tenant decodes on. Fair policies read
these counts at every decision, so this module is part of the compiled build.
"""

from __future__ import annotations

from typing import Sequence as Seq

from .decodeset import DecodingTenants
from .request import Tenant
from .service import ServiceWeights, service


class Ledger:
    """Per-tenant counts, indexed like the scheduler's tenants: queued requests and their prompt
    tokens, running requests, prompt tokens processed and output tokens generated."""

    __slots__ = ("weights", "queued", "queued_tokens", "running", "prompt_tokens", "cached_tokens", "decoding",
                 "_settled_output", "_tenant_weight")

    def __init__(self, tenants: Seq[Tenant], weights: ServiceWeights) -> None:
        n = len(tenants)
        self.weights = weights
        self.queued = [0] * n
        self.queued_tokens = [0] * n
        self.running = [0] * n
        self.prompt_tokens = [0] * n  # computed, recompute excluded
        self.cached_tokens = [0] * n  # found in the prefix cache (a prompt token counts here or above)
        self._settled_output = [0] * n  # output tokens but those the decode sets owe still
        self._tenant_weight = [tenant.weight for tenant in tenants]
        self.decoding = DecodingTenants(self._settle, n)  # where each tenant decodes, what it owes

    def _settle(self, tenant: int, tokens: int) -> None:
        self._settled_output[tenant] += tokens

    def add_output(self, tenant: int, tokens: int) -> None:
        """`tenant` generated `tokens` outside a decode set (the token a completed prefill samples)."""
        self._settled_output[tenant] += tokens

    def output_tokens(self, tenant: int) -> int:
        """Output tokens `tenant` has generated, its decoding requests' up to now included."""
        return self._settled_output[tenant] + self.decoding.pending(tenant)

    def outputs(self) -> list[int]:
        """Every tenant's output tokens generated."""
        return [self.output_tokens(tenant) for tenant in range(len(self._tenant_weight))]

    def service(self, tenant: int) -> float:
        """`tenant`'s normalised service now."""
        return service(self.weights, self.prompt_tokens[tenant], self.output_tokens(tenant),
                       self._tenant_weight[tenant], self.cached_tokens[tenant])

    def services(self) -> list[float]:
        """Every tenant's normalised service now."""
        return [self.service(tenant) for tenant in range(len(self._tenant_weight))]
