"""GPU and model specs that the cost model prices steps with.

This module owns the catalogue of hardware and model figures, the lookup by name, and reading a
model's shape from a Hugging Face `config.json`; it computes nothing beyond a spec's own derived
sizes (parameter counts, weight and KV bytes, the experts a batch touches).

GPU sources (dense BF16 tensor FLOP/s without sparsity, memory bandwidth, memory size; the link is
the per-direction bandwidth all-reduce uses):
- H100 SXM, H200: NVIDIA H100 / H200 datasheets (989 TFLOP/s; 3.35 / 4.8 TB/s HBM; 80 / 141 GB;
  NVLink 900 GB/s bidirectional, so 450 GB/s per direction).
  https://www.nvidia.com/en-us/data-center/h100/, https://www.nvidia.com/en-us/data-center/h200/
- A100 80GB / 40GB SXM: NVIDIA A100 datasheet (312 TFLOP/s; 2,039 / 1,555 GB/s; NVLink 600 GB/s
  bidirectional). https://www.nvidia.com/en-us/data-center/a100/
- B200 (HGX B200): NVIDIA HGX platform specs, per GPU: 4.5 PFLOP/s FP16/BF16 with sparsity, so
  2.25 dense; 8 TB/s HBM3e; 1,440 GB over 8 GPUs, 180 GB each; NVLink 5 1.8 TB/s bidirectional.
  https://www.nvidia.com/en-us/data-center/hgx/
- L40S: NVIDIA L40S datasheet (362 TFLOP/s, 864 GB/s GDDR6, 48 GB); no NVLink, so all-reduce goes
  over PCIe Gen4 x16 (~32 GB/s per direction). https://www.nvidia.com/en-us/data-center/l40s/
- RTX 4090: NVIDIA Ada GPU architecture whitepaper, appendix A (165.2 TFLOP/s BF16 with FP32
  accumulate, 330.3 with sparsity; 1,008 GB/s GDDR6X; 24 GB); PCIe Gen4 x16 (~32 GB/s).
  https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf
- RTX PRO 6000 Blackwell (workstation / server edition): NVIDIA RTX PRO 6000 Blackwell datasheet
  and RTX Blackwell architecture whitepaper (503.8 TFLOP/s BF16 with FP32 accumulate, 1,007.6 with
  sparsity; 1,792 GB/s GDDR7; 96 GB); PCIe Gen5 x16 (~64 GB/s).
  https://www.nvidia.com/en-us/products/workstations/professional-desktop-gpus/rtx-pro-6000/

Model sources: each built-in is the published `config.json` of its Hugging Face repo (the URL next
to it). The short names of earlier versions (llama-3-8b, llama-3-70b, mistral-7b, qwen2.5-14b)
stay, with the figures they had, so that configs naming them give the same results.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from scheduler.errors import ConfigError

# the repo's checks and messages
from .validation import check_keys, in_range, shown

__all__ = ["GPUSpec", "ModelSpec", "GPUS", "MODELS", "GPU_SPEC_FIELDS", "get_gpu", "get_model",
           "model_from_hf_config", "read_model_config", "count_params"]


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU's roofline figures."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    memory_bytes: float
    link_bandwidth: float  # bytes/s per GPU used by all-reduce (NVLink; PCIe where there is none)


# The fields of a custom GPU ([cluster.gpu_spec]) and their allowed ranges.
GPU_SPEC_FIELDS = {
    "peak_flops": (1e9, 1e18),
    "hbm_bandwidth": (1e9, 1e15),
    "memory_bytes": (1e9, 1e14),
    "link_bandwidth": (1e6, 1e15),
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer, dense or mixture-of-experts, as far as step cost and KV size need it.

    `params` is the total parameter count; a MoE layer has `experts` feed-forward experts of
    `expert_intermediate` each, `experts_per_token` of them run per token, plus a shared expert
    of `shared_intermediate` (0 when there is none) that every token runs.
    """

    name: str
    params: float  # total parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2
    intermediate: int = 0
    vocab: int = 0
    tied_embeddings: bool = False
    experts: int = 0  # 0: dense
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0  # layers of a MoE model with a dense feed-forward of `intermediate` instead
    context_len: int = 0  # the longest sequence it takes (config.json max_position_embeddings); 0: not known

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.experts else 0

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        # K and V, per layer, per KV head (GQA shares them across query heads).
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def expert_params(self) -> float:
        """Parameters of one routed expert summed over the layers (gate, up and down projections)."""
        return 3 * self.hidden * self.expert_intermediate * self.moe_layers

    @property
    def active_params(self) -> float:
        """Parameters one token runs through: all of a dense model's; a MoE's minus unrouted experts."""
        if not self.experts:
            return self.params
        return self.params - (self.experts - self.experts_per_token) * self.expert_params

    @property
    def lm_head_params(self) -> float:
        """Parameters of the LM head (vocab x hidden), which runs once per sampled sequence: an
        engine computes logits at each sequence's last position only, not for every prefill token."""
        return self.vocab * self.hidden

    @property
    def per_token_params(self) -> float:
        """Parameters a token's forward pass multiplies: the active ones less the embedding table
        (a lookup, no FLOPs) and the LM head (priced per sequence, `lm_head_params`)."""
        tables = 1 if self.tied_embeddings else 2
        return self.active_params - tables * self.vocab * self.hidden

    def touched_experts(self, num_tokens: int) -> float:
        """Expected experts per layer that `num_tokens` tokens routed top-k uniformly touch:
        E * (1 - (1 - k/E)^T)."""
        e, k = self.experts, self.experts_per_token
        return e * (1 - (1 - k / e) ** num_tokens)

    def weight_bytes_read(self, num_tokens: int) -> float:
        """Weight bytes a step of `num_tokens` tokens reads: all of a dense model's but an untied
        input embedding table (a lookup reads only its tokens' rows); of a MoE's, also not the
        routed experts its tokens do not touch."""
        lookup_only = 0 if self.tied_embeddings else self.vocab * self.hidden
        untouched = self.experts - self.touched_experts(num_tokens) if self.experts else 0
        return (self.params - lookup_only - untouched * self.expert_params) * self.dtype_bytes


def count_params(m: ModelSpec) -> float:
    """Total parameters from the shape: embeddings (and an untied LM head), per layer attention,
    the feed-forward (dense, or router + experts + shared expert) and the RMSNorms, a final norm.
    Attention is multi-head or grouped-query (DeepSeek's latent attention is counted as such)."""
    attention = 2 * m.hidden * m.heads * m.head_dim + 2 * m.hidden * m.kv_heads * m.head_dim
    moe = m.hidden * m.experts + 3 * m.hidden * (m.experts * m.expert_intermediate + m.shared_intermediate)
    dense = 3 * m.hidden * m.intermediate
    feed_forward = m.moe_layers * moe + (m.layers - m.moe_layers) * dense
    embeddings = m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
    return embeddings + m.layers * (attention + 2 * m.hidden) + feed_forward + m.hidden


# ----- Hugging Face config.json ----------------------------------------------------------------

REQUIRED_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
MAX_CONTEXT = 2**31 - 1  # a sequence's tokens, as the workload bounds them
MAX_DIM = 1 << 20  # any one dimension of a model; the largest published ones are ~250k (vocabularies)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")  # Mixtral; Qwen-MoE; DeepSeek


def model_from_hf_config(config: Mapping, name: str, where: str) -> ModelSpec:
    """The spec of a Hugging Face `config.json` table; errors start with `where` (the file)."""
    missing = [k for k in REQUIRED_KEYS if config.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}; a model's config.json needs "
                          f"{', '.join(REQUIRED_KEYS)}")
    dim = functools.partial(_dimension, config, where)
    hidden, heads = dim("hidden_size"), dim("num_attention_heads")
    kv_heads = dim("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ConfigError(f"{where}: num_key_value_heads: must divide num_attention_heads ({heads}), "
                          f"got {kv_heads}")
    spec = ModelSpec(
        name=name, params=0.0, layers=dim("num_hidden_layers"), hidden=hidden, heads=heads,
        kv_heads=kv_heads, head_dim=dim("head_dim", max(hidden // heads, 1)), dtype_bytes=_dtype_bytes(config, where),
        intermediate=dim("intermediate_size"), vocab=dim("vocab_size"),
        tied_embeddings=_flag(config, "tie_word_embeddings", where), **_experts(config, where),
        context_len=_context_len(config, where),
    )
    return _with_params(spec)


def _with_params(spec: ModelSpec) -> ModelSpec:
    return replace(spec, params=float(count_params(spec)))


def _dimension(config: Mapping, where: str, key: str, default: int | None = None) -> int:
    value = config.get(key)
    return default if value is None and default is not None else in_range(
        value, f"{where}: {key}", 1, MAX_DIM, integer=True)


def _context_len(config: Mapping, where: str) -> int:
    value = config.get("max_position_embeddings")
    return 0 if value is None else in_range(value, f"{where}: max_position_embeddings", 1, MAX_CONTEXT, integer=True)


def _flag(config: Mapping, key: str, where: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: must be true or false, got {shown(value)}")
    return value


def _dtype_bytes(config: Mapping, where: str) -> int:
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"  # newer transformers write dtype
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ConfigError(f"{where}: torch_dtype: unknown dtype {shown(dtype)}; allowed: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def _experts(config: Mapping, where: str) -> dict:
    key = next((k for k in EXPERT_KEYS if config.get(k)), None)
    if key is None:
        return {}
    dim = functools.partial(_dimension, config, where)
    experts = dim(key)
    if config.get("num_experts_per_tok") is None:
        raise ConfigError(f"{where}: missing num_experts_per_tok; a mixture-of-experts config.json ({key}) needs it")
    per_token = dim("num_experts_per_tok")
    if per_token > experts:
        raise ConfigError(f"{where}: num_experts_per_tok: must be <= {key} ({experts}), got {per_token}")
    expert_intermediate = dim("moe_intermediate_size", dim("intermediate_size"))
    # Qwen-MoE: one shared expert of its own size; DeepSeek: n shared experts of the routed size.
    shared = dim("shared_expert_intermediate_size", 0)
    shared = shared or _count(config, where, "n_shared_experts") * expert_intermediate
    return {"experts": experts, "experts_per_token": per_token, "expert_intermediate": expert_intermediate,
            "shared_intermediate": shared, "dense_layers": _dense_layers(config, where, dim("num_hidden_layers"))}


def _count(config: Mapping, where: str, key: str, default: int = 0) -> int:
    value = config.get(key)
    return default if value is None else in_range(value, f"{where}: {key}", 0, MAX_DIM, integer=True)


def _dense_layers(config: Mapping, where: str, layers: int) -> int:
    """Layers with a dense feed-forward: Qwen-MoE's `mlp_only_layers` and those off its
    `decoder_sparse_step`, DeepSeek's `first_k_dense_replace` first ones."""
    only = config.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise ConfigError(f"{where}: mlp_only_layers: must be a list of layer indices, got {shown(only)}")
    step = max(_count(config, where, "decoder_sparse_step", 1), 1)
    first = _count(config, where, "first_k_dense_replace")
    sparse = [i for i in range(layers) if i >= first and i not in only and (i + 1) % step == 0]
    if not sparse:
        raise ConfigError(f"{where}: no mixture-of-experts layer left (mlp_only_layers, decoder_sparse_step, "
                          f"first_k_dense_replace); a dense model has no experts")
    return layers - len(sparse)


def read_model_config(path: str | Path) -> ModelSpec:
    """The spec of the Hugging Face `config.json` at `path` (a folder means its config.json);
    errors name `cluster.model` and the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(f"cluster.model: {path}: no such file; allowed: a built-in model name "
                          f"or a path to a Hugging Face config.json") from None
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int) -> ModelSpec:
    where = f"cluster.model: {path}"
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: cannot read the model config: {getattr(err, 'strerror', None) or err}") \
            from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise ConfigError(f"{where}: not valid JSON: {err}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a JSON object, got {type(table).__name__}")
    if "nodes" in table and "hidden_size" not in table:
        return _cluster_config_model(table, where)
    return model_from_hf_config(table, Path(path).parent.name or path, where)


def _cluster_config_model(table: Mapping, where: str) -> ModelSpec:
    """The built-in model an LLMServingSim cluster config (the `config.json` of the real runs in the
    shared data) names in `nodes[0].instances[0].model_name`."""
    try:
        name = table["nodes"][0]["instances"][0]["model_name"]
    except (KeyError, IndexError, TypeError):
        name = None
    if not isinstance(name, str):
        raise ConfigError(f"{where}: nodes[0].instances[0].model_name: missing; a cluster config names its model there")
    if name not in MODELS:
        raise ConfigError(f"{where}: nodes[0].instances[0].model_name: {name!r} is not a built-in model; "
                          f"allowed: {', '.join(sorted(HF_CONFIGS))}")
    return MODELS[name]


# ----- the catalogues ----------------------------------------------------------------------------

GPUS: Mapping[str, GPUSpec] = MappingProxyType(
    {
        "h100": GPUSpec("h100", 989e12, 3.35e12, 80e9, 450e9),
        "a100-80gb": GPUSpec("a100-80gb", 312e12, 2.039e12, 80e9, 300e9),
        "a100-40gb": GPUSpec("a100-40gb", 312e12, 1.555e12, 40e9, 300e9),
        "h200": GPUSpec("h200", 989e12, 4.8e12, 141e9, 450e9),
        "b200": GPUSpec("b200", 2.25e15, 8e12, 180e9, 900e9),
        "l40s": GPUSpec("l40s", 362e12, 864e9, 48e9, 32e9),
        "rtx-4090": GPUSpec("rtx-4090", 165.2e12, 1.008e12, 24e9, 32e9),
        "rtx-pro-6000": GPUSpec("rtx-pro-6000", 503.8e12, 1.792e12, 96e9, 64e9),
    }
)

_LLAMA3_8B = dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                  head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False,
                  torch_dtype="bfloat16", max_position_embeddings=131072)
_LLAMA3_70B = dict(_LLAMA3_8B, num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
                   intermediate_size=28672)
_LLAMA2_7B = dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False, torch_dtype="float16",
                  max_position_embeddings=4096)
_MISTRAL_7B = dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                   head_dim=128, intermediate_size=14336, vocab_size=32000, tie_word_embeddings=False,
                   torch_dtype="bfloat16", max_position_embeddings=32768)
_QWEN3_14B = dict(num_hidden_layers=40, hidden_size=5120, num_attention_heads=40, num_key_value_heads=8,
                  head_dim=128, intermediate_size=17408, vocab_size=151936, tie_word_embeddings=False,
                  torch_dtype="bfloat16", max_position_embeddings=40960)

# The fields of each repo's published config.json that the cost model reads.
HF_CONFIGS: Mapping[str, Mapping] = MappingProxyType({
    # https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    # https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (the base model, same shape)
    "meta-llama/Llama-3.1-8B": _LLAMA3_8B,
    # https://huggingface.co/meta-llama/Llama-3.1-70B-Instruct/blob/main/config.json
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA3_70B,
    # https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    # https://huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json
    "meta-llama/Llama-2-70b-hf": dict(_LLAMA2_7B, num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
                                      num_key_value_heads=8, intermediate_size=28672),
    # https://huggingface.co/codellama/CodeLlama-34b-Instruct-hf/blob/main/config.json
    "codellama/CodeLlama-34b-Instruct-hf": dict(_LLAMA2_7B, num_hidden_layers=48, hidden_size=8192,
                                                num_attention_heads=64, num_key_value_heads=8,
                                                intermediate_size=22016, torch_dtype="bfloat16",
                                                max_position_embeddings=16384),
    # https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
    "mistralai/Mistral-7B-v0.1": _MISTRAL_7B,
    # https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    "mistralai/Mixtral-8x7B-v0.1": dict(_MISTRAL_7B, num_local_experts=8, num_experts_per_tok=2),
    # https://huggingface.co/mistralai/Mixtral-8x22B-Instruct-v0.1/blob/main/config.json
    "mistralai/Mixtral-8x22B-Instruct-v0.1": dict(_MISTRAL_7B, num_hidden_layers=56, hidden_size=6144,
                                                  num_attention_heads=48, intermediate_size=16384,
                                                  vocab_size=32768, num_local_experts=8, num_experts_per_tok=2,
                                                  max_position_embeddings=65536),
    # https://huggingface.co/Qwen/Qwen2.5-14B-Instruct/blob/main/config.json
    "Qwen/Qwen2.5-14B-Instruct": dict(num_hidden_layers=48, hidden_size=5120, num_attention_heads=40,
                                      num_key_value_heads=8, intermediate_size=13824, vocab_size=152064,
                                      tie_word_embeddings=False, torch_dtype="bfloat16",
                                      max_position_embeddings=32768),
    # https://huggingface.co/Qwen/Qwen3-14B/blob/main/config.json
    "Qwen/Qwen3-14B": _QWEN3_14B,
    # https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
    "Qwen/Qwen3-30B-A3B": dict(_QWEN3_14B, num_hidden_layers=48, hidden_size=2048, num_attention_heads=32,
                               num_key_value_heads=4, intermediate_size=6144, moe_intermediate_size=768,
                               num_experts=128, num_experts_per_tok=8),
})

# The short names of earlier versions, with the figures they had (published totals to 3 digits):
# meta-llama/Meta-Llama-3-8B, meta-llama/Meta-Llama-3-70B, mistralai/Mistral-7B-v0.1, Qwen/Qwen2.5-14B.
_SHORT_NAMES = {
    "llama-3-8b": ModelSpec("llama-3-8b", 8.03e9, 32, 4096, 32, 8, 128, intermediate=14336, vocab=128256),
    "llama-3-70b": ModelSpec("llama-3-70b", 70.6e9, 80, 8192, 64, 8, 128, intermediate=28672, vocab=128256),
    "mistral-7b": ModelSpec("mistral-7b", 7.24e9, 32, 4096, 32, 8, 128, intermediate=14336, vocab=32000),
    "qwen2.5-14b": ModelSpec("qwen2.5-14b", 14.7e9, 48, 5120, 40, 8, 128, intermediate=13824, vocab=152064),
}

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {**_SHORT_NAMES, **{repo: model_from_hf_config(table, repo, repo) for repo, table in HF_CONFIGS.items()}}
)


def get_gpu(name: str) -> GPUSpec:
    """The GPU called `name`; ConfigError naming `cluster.gpu` if there is none."""
    return _lookup(GPUS, name, "cluster.gpu", "GPU")


def get_model(name: str, base_dir: str | Path | None = None) -> ModelSpec:
    """The built-in model called `name`, or the Hugging Face config.json at the path `name`
    (relative to `base_dir` when given); ConfigError naming `cluster.model` if neither."""
    if isinstance(name, str) and name not in MODELS and _looks_like_a_path(name, base_dir):
        return read_model_config(Path(base_dir or ".") / name)
    return _lookup(MODELS, name, "cluster.model", "model", ", or a path to a Hugging Face config.json")


def resolve_model(name: str, base_dir: str | Path | None) -> str:
    """A built-in name as it is; a path made absolute against `base_dir` (the config file's folder)."""
    if name in MODELS or not _looks_like_a_path(name, base_dir):
        return name
    return str((Path(base_dir or ".") / name).resolve())


def _looks_like_a_path(name: str, base_dir) -> bool:
    # A name that is neither built in nor ends in .json nor exists is an unknown model, not a missing file.
    return name.endswith(".json") or os.path.exists(Path(base_dir or ".") / name)


def _lookup(table, name, key, what, more=""):
    # isinstance first: an unhashable name would raise TypeError from the mapping instead.
    spec = table.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"{key}: unknown {what} {name!r}; allowed: {', '.join(sorted(table))}{more}")
    return spec


def custom_gpu(table, key: str = "cluster.gpu_spec") -> GPUSpec:
    """A GPU from a `[cluster.gpu_spec]` table: the catalogue's fields (FLOP/s, bytes/s, bytes),
    each a number in its range, and an optional `name`."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}: must be a table, got {shown(table)}")
    check_keys(table, ("name", *GPU_SPEC_FIELDS), key)
    missing = [k for k in GPU_SPEC_FIELDS if k not in table]
    if missing:
        raise ConfigError(f"{key}: missing {', '.join(missing)}; a custom GPU needs {', '.join(GPU_SPEC_FIELDS)}")
    name = table.get("name", "custom")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name: must be a non-empty string, got {shown(name)}")
    figures = {k: float(in_range(table[k], f"{key}.{k}", *bounds)) for k, bounds in GPU_SPEC_FIELDS.items()}
    return GPUSpec(name, **figures)
