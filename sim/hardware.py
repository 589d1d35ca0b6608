"""GPU and model specs that the cost model prices steps with.

This module owns the catalogue of hardware and model figures and the lookup by name; it computes
nothing beyond a spec's own derived sizes.

Sources:
- H100 SXM, H200: NVIDIA H100 / H200 datasheets (989 TFLOP/s dense BF16; 3.35 / 4.8 TB/s HBM;
  NVLink 900 GB/s bidirectional, so 450 GB/s per direction).
- A100 80GB SXM: NVIDIA A100 datasheet (312 TFLOP/s dense BF16, 2,039 GB/s, NVLink 600 GB/s
  bidirectional).
- L40S: NVIDIA L40S datasheet (362 TFLOP/s dense BF16, 864 GB/s GDDR6, 48 GB); no NVLink, so
  all-reduce goes over PCIe Gen4 x16 (~32 GB/s per direction).
- Models: the published Hugging Face `config.json` of meta-llama/Meta-Llama-3-8B,
  meta-llama/Meta-Llama-3-70B, mistralai/Mistral-7B-v0.1 and Qwen/Qwen2.5-14B.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from scheduler.errors import ConfigError

__all__ = ["GPUSpec", "ModelSpec", "GPUS", "MODELS", "get_gpu", "get_model"]


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU's roofline figures."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    memory_bytes: float
    link_bandwidth: float  # bytes/s per GPU used by all-reduce (NVLink; PCIe for L40S)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A dense decoder-only transformer, as far as step cost and KV size need it."""

    name: str
    params: float  # total parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        # K and V, per layer, per KV head (GQA shares them across query heads).
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


GPUS: Mapping[str, GPUSpec] = MappingProxyType(
    {
        "h100": GPUSpec("h100", 989e12, 3.35e12, 80e9, 450e9),
        "a100-80gb": GPUSpec("a100-80gb", 312e12, 2.039e12, 80e9, 300e9),
        "h200": GPUSpec("h200", 989e12, 4.8e12, 141e9, 450e9),
        "l40s": GPUSpec("l40s", 362e12, 864e9, 48e9, 32e9),
    }
)

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "llama-3-8b": ModelSpec("llama-3-8b", 8.03e9, 32, 4096, 32, 8, 128),
        "llama-3-70b": ModelSpec("llama-3-70b", 70.6e9, 80, 8192, 64, 8, 128),
        "mistral-7b": ModelSpec("mistral-7b", 7.24e9, 32, 4096, 32, 8, 128),
        "qwen2.5-14b": ModelSpec("qwen2.5-14b", 14.7e9, 48, 5120, 40, 8, 128),
    }
)


def get_gpu(name: str) -> GPUSpec:
    """The GPU called `name`; ConfigError naming `cluster.gpu` if there is none."""
    return _lookup(GPUS, name, "cluster.gpu", "GPU")


def get_model(name: str) -> ModelSpec:
    """The model called `name`; ConfigError naming `cluster.model` if there is none."""
    return _lookup(MODELS, name, "cluster.model", "model")


def _lookup(table, name, key, what):
    # isinstance first: an unhashable name would raise TypeError from the mapping instead.
    spec = table.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"{key}: unknown {what} {name!r}; allowed: {', '.join(sorted(table))}")
    return spec
