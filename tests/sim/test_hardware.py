"""GPU and model catalogue: published figures, derived sizes, config.json reading, lookup errors."""

import dataclasses
import json
from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from sim.hardware import (GPUS, HF_CONFIGS, MODELS, GPUSpec, ModelSpec, count_params, custom_gpu, get_gpu, get_model,
                          model_from_hf_config, read_model_config)

SHORT_NAMES = {"llama-3-8b", "llama-3-70b", "mistral-7b", "qwen2.5-14b"}


def test_catalogue_keys():
    assert set(GPUS) == {"h100", "a100-80gb", "a100-40gb", "h200", "b200", "l40s", "rtx-4090", "rtx-pro-6000"}
    assert set(MODELS) == SHORT_NAMES | set(HF_CONFIGS)
    assert len(HF_CONFIGS) >= 12


def test_spec_names_match_their_keys():
    assert all(spec.name == key for key, spec in GPUS.items())
    assert all(spec.name == key for key, spec in MODELS.items())


def test_catalogues_are_read_only():
    with pytest.raises(TypeError):
        GPUS["b200"] = GPUS["h100"]  # type: ignore[index]
    with pytest.raises(TypeError):
        del MODELS["llama-3-8b"]  # type: ignore[attr-defined]


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPUS["h100"].peak_flops = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["llama-3-8b"].layers = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "name, figures",
    [
        ("h100", (989e12, 3.35e12, 80e9, 450e9)),
        ("a100-80gb", (312e12, 2.039e12, 80e9, 300e9)),
        ("h200", (989e12, 4.8e12, 141e9, 450e9)),
        ("l40s", (362e12, 864e9, 48e9, 32e9)),
        ("a100-40gb", (312e12, 1.555e12, 40e9, 300e9)),
        ("b200", (2.25e15, 8e12, 180e9, 900e9)),
        ("rtx-4090", (165.2e12, 1.008e12, 24e9, 32e9)),
        ("rtx-pro-6000", (503.8e12, 1.792e12, 96e9, 64e9)),
    ],
)
def test_gpu_figures(name, figures):
    g = get_gpu(name)
    assert (g.peak_flops, g.hbm_bandwidth, g.memory_bytes, g.link_bandwidth) == figures


@pytest.mark.parametrize(
    "name, figures",
    [
        ("llama-3-8b", (8.03e9, 32, 4096, 32, 8, 128)),
        ("llama-3-70b", (70.6e9, 80, 8192, 64, 8, 128)),
        ("mistral-7b", (7.24e9, 32, 4096, 32, 8, 128)),
        ("qwen2.5-14b", (14.7e9, 48, 5120, 40, 8, 128)),
    ],
)
def test_model_figures(name, figures):
    m = get_model(name)
    assert (m.params, m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim) == figures
    assert m.dtype_bytes == 2


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_model_shapes_are_consistent(model):
    # GQA groups are whole; heads * head_dim spans the hidden size except where the config sets
    # head_dim apart from it (Qwen3-30B-A3B: 32 x 128 over a hidden size of 2,048).
    assert model.heads % model.kv_heads == 0
    assert model.heads * model.head_dim == model.hidden or model.name == "Qwen/Qwen3-30B-A3B"


def test_kv_bytes_per_token():
    assert get_model("llama-3-8b").kv_bytes_per_token == 131072  # 128 KiB
    assert get_model("llama-3-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert get_model("qwen2.5-14b").kv_bytes_per_token == 2 * 48 * 8 * 128 * 2
    assert isinstance(get_model("mistral-7b").kv_bytes_per_token, int)


def test_kv_bytes_follow_dtype():
    fp8 = dataclasses.replace(get_model("llama-3-8b"), dtype_bytes=1)
    assert fp8.kv_bytes_per_token == 65536
    assert fp8.weight_bytes == 8.03e9


def test_weight_bytes():
    assert get_model("llama-3-8b").weight_bytes == pytest.approx(16.06e9)
    assert get_model("llama-3-70b").weight_bytes == pytest.approx(141.2e9)


def test_lookup_returns_catalogue_entry():
    assert get_gpu("h200") is GPUS["h200"]
    assert get_model("mistral-7b") is MODELS["mistral-7b"]
    assert isinstance(get_gpu("l40s"), GPUSpec)
    assert isinstance(get_model("qwen2.5-14b"), ModelSpec)


@pytest.mark.parametrize("bad", ["x", "H100", "", "b100", None, ["h100"]])
def test_unknown_gpu_names_key_and_allowed(bad):
    with pytest.raises(ConfigError) as info:
        get_gpu(bad)
    message = str(info.value)
    assert message.startswith("cluster.gpu:")
    assert "allowed: a100-40gb, a100-80gb, b200, h100, h200, l40s, rtx-4090, rtx-pro-6000" in message


@pytest.mark.parametrize("bad", ["llama-3-7b", "LLAMA-3-8B", 8, None])
def test_unknown_model_names_key_and_allowed(bad):
    with pytest.raises(ConfigError) as info:
        get_model(bad)
    message = str(info.value)
    assert message.startswith("cluster.model:")
    assert "llama-3-70b, llama-3-8b, meta-llama/Llama-2-70b-hf" in message
    assert message.endswith("or a path to a Hugging Face config.json")
    assert repr(bad) in message


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        get_gpu("x")


# Published parameter counts (total, active for MoE), in billions, and where they are stated.
PUBLISHED = {
    # "Model size: 8.03B params": https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct
    "meta-llama/Llama-3.1-8B-Instruct": (8.03, None),
    # "8.03B params": https://huggingface.co/meta-llama/Llama-3.1-8B
    "meta-llama/Llama-3.1-8B": (8.03, None),
    # "70.6B params": https://huggingface.co/meta-llama/Llama-3.1-70B-Instruct
    "meta-llama/Llama-3.1-70B-Instruct": (70.6, None),
    # "6.74B params": https://huggingface.co/meta-llama/Llama-2-7b-hf
    "meta-llama/Llama-2-7b-hf": (6.74, None),
    # "69B params": https://huggingface.co/meta-llama/Llama-2-70b-hf
    "meta-llama/Llama-2-70b-hf": (69.0, None),
    # "33.7B params": https://huggingface.co/codellama/CodeLlama-34b-Instruct-hf
    "codellama/CodeLlama-34b-Instruct-hf": (33.7, None),
    # "7.24B params": https://huggingface.co/mistralai/Mistral-7B-v0.1
    "mistralai/Mistral-7B-v0.1": (7.24, None),
    # "46.7B total parameters but only uses 12.9B parameters per token": https://mistral.ai/news/mixtral-of-experts
    "mistralai/Mixtral-8x7B-v0.1": (46.7, 12.9),
    # "39B active parameters out of 141B": https://mistral.ai/news/mixtral-8x22b
    "mistralai/Mixtral-8x22B-Instruct-v0.1": (141.0, 39.0),
    # "Number of Parameters: 14.7B": https://huggingface.co/Qwen/Qwen2.5-14B-Instruct
    "Qwen/Qwen2.5-14B-Instruct": (14.7, None),
    # "Number of Parameters: 14.8B": https://huggingface.co/Qwen/Qwen3-14B
    "Qwen/Qwen3-14B": (14.8, None),
    # "30.5B in total and 3.3B activated": https://huggingface.co/Qwen/Qwen3-30B-A3B
    "Qwen/Qwen3-30B-A3B": (30.5, 3.3),
    # the short names: the published totals of Meta-Llama-3-8B / -70B, Mistral-7B-v0.1, Qwen2.5-14B
    "llama-3-8b": (8.03, None),
    "llama-3-70b": (70.6, None),
    "mistral-7b": (7.24, None),
    "qwen2.5-14b": (14.7, None),
}
TOLERANCE = 0.02  # the published figures are rounded to 2-3 digits; the count leaves out biases


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_from_the_shape_matches_the_published_figure(name):
    total, active = PUBLISHED[name]
    m = get_model(name)
    assert count_params(m) / 1e9 == pytest.approx(total, rel=TOLERANCE)
    assert m.params / 1e9 == pytest.approx(total, rel=TOLERANCE)
    if active is None:
        assert m.experts == 0 and m.active_params == m.params
    else:
        assert m.active_params / 1e9 == pytest.approx(active, rel=TOLERANCE)


def test_every_built_in_has_a_published_figure():
    assert set(PUBLISHED) == set(MODELS)


def test_built_in_specs_are_what_their_config_says():
    assert get_model("meta-llama/Llama-3.1-8B-Instruct").params == 8_030_261_248  # the safetensors total
    mixtral = get_model("mistralai/Mixtral-8x7B-v0.1")
    assert (mixtral.experts, mixtral.experts_per_token, mixtral.expert_intermediate) == (8, 2, 14336)
    qwen = get_model("Qwen/Qwen3-30B-A3B")
    assert (qwen.experts, qwen.experts_per_token, qwen.expert_intermediate, qwen.head_dim) == (128, 8, 768, 128)
    assert get_model("meta-llama/Llama-2-7b-hf").kv_heads == 32  # no GQA: num_key_value_heads = heads


def test_touched_experts_follow_top_k_routing():
    m = get_model("mistralai/Mixtral-8x7B-v0.1")
    assert m.touched_experts(1) == pytest.approx(2)
    assert m.touched_experts(2) == pytest.approx(8 * (1 - 0.75**2))
    assert m.touched_experts(10_000) == pytest.approx(8)
    table = m.vocab * m.hidden * 2  # the untied input embeddings: a lookup, never read whole
    assert m.weight_bytes_read(1) == pytest.approx(m.active_params * 2 - table)
    assert m.weight_bytes_read(10_000) == pytest.approx(m.weight_bytes - table)
    dense = get_model("llama-3-8b")
    assert dense.weight_bytes_read(1) == dense.weight_bytes_read(4096) == dense.weight_bytes - 128_256 * 4096 * 2


def test_lm_head_runs_per_sequence_and_the_lookup_computes_nothing():
    m = get_model("meta-llama/Llama-3.1-8B-Instruct")
    assert m.lm_head_params == 128_256 * 4096
    assert m.per_token_params == pytest.approx(m.params - 2 * 128_256 * 4096)
    tied = dataclasses.replace(m, tied_embeddings=True, params=m.params - m.lm_head_params)
    assert tied.per_token_params == pytest.approx(m.per_token_params)
    assert tied.weight_bytes_read(1) == pytest.approx(tied.weight_bytes)  # the table is the head: read whole


# ----- config.json ----------------------------------------------------------------------------

def write_config(folder: Path, **fields) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(fields))
    return path


def test_a_config_json_gives_the_same_spec_as_the_built_in(tmp_path):
    path = write_config(tmp_path, architectures=["LlamaForCausalLM"], **HF_CONFIGS["meta-llama/Llama-3.1-8B-Instruct"])
    spec = read_model_config(path)
    built_in = get_model("meta-llama/Llama-3.1-8B-Instruct")
    assert dataclasses.replace(spec, name=built_in.name) == built_in
    assert read_model_config(tmp_path) == spec  # a folder means its config.json
    assert get_model("config.json", tmp_path) == spec  # relative to a base folder


def test_config_json_defaults_and_dtypes(tmp_path):
    spec = read_model_config(write_config(tmp_path, num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                          intermediate_size=128, vocab_size=100, torch_dtype="float32",
                                          tie_word_embeddings=True))
    assert (spec.kv_heads, spec.head_dim, spec.dtype_bytes, spec.tied_embeddings) == (4, 16, 4, True)
    assert spec.context_len == 0  # no max_position_embeddings: not known
    assert spec.params == 100 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert spec.kv_bytes_per_token == 2 * 2 * 4 * 16 * 4


def test_config_json_moe_with_shared_experts(tmp_path):
    base = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100)
    qwen = read_model_config(write_config(tmp_path, **base, num_experts=8, num_experts_per_tok=2,
                                          moe_intermediate_size=32, shared_expert_intermediate_size=96))
    assert (qwen.experts, qwen.experts_per_token, qwen.expert_intermediate, qwen.shared_intermediate) == (8, 2, 32, 96)
    deepseek = read_model_config(write_config(tmp_path, **base, n_routed_experts=8, num_experts_per_tok=2,
                                              moe_intermediate_size=32, n_shared_experts=2))
    assert deepseek.shared_intermediate == 64
    assert deepseek.active_params == deepseek.params - 6 * 3 * 64 * 32 * 2


MINIMAL = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 64}, r"config\.json: missing num_hidden_layers, num_attention_heads, intermediate_size, "
                              r"vocab_size; a model's config.json needs"),
        ({**MINIMAL, "num_local_experts": 4, "num_experts_per_tok": 5},
         r"config\.json: num_experts_per_tok: must be <= num_local_experts \(4\), got 5"),
        ({**MINIMAL, "num_experts": 4}, r"config\.json: missing num_experts_per_tok"),
        ({**MINIMAL, "hidden_size": -1}, r"config\.json: hidden_size: must be an integer in \[1, 1,048,576\], got -1"),
        ({**MINIMAL, "num_key_value_heads": 3}, r"num_key_value_heads: must divide num_attention_heads \(4\), got 3"),
        ({**MINIMAL, "torch_dtype": "int3"}, r"torch_dtype: unknown dtype 'int3'; allowed: float32"),
        ({**MINIMAL, "torch_dtype": ["bf16"]}, r"torch_dtype: unknown dtype \['bf16'\]; allowed"),
        ({**MINIMAL, "tie_word_embeddings": "yes"}, r"tie_word_embeddings: must be true or false"),
    ],
)
def test_bad_config_json_is_a_named_error(tmp_path, fields, message):
    path = write_config(tmp_path, **fields)
    with pytest.raises(ConfigError, match=message) as info:
        read_model_config(path)
    assert str(info.value).startswith(f"cluster.model: {path}: ")


def test_config_json_that_is_not_json_or_missing(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        read_model_config(tmp_path / "config.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"list\.json: must be a JSON object, got list"):
        read_model_config(tmp_path / "list.json")
    with pytest.raises(ConfigError, match=r"^cluster\.model: .*nope\.json: no such file"):
        get_model(str(tmp_path / "nope.json"))


@pytest.mark.parametrize("gpu", ["RTX4090", "RTXPRO6000"])
def test_the_real_runs_config_json_names_its_model(shared_data, gpu):
    # The real runs ship LLMServingSim's cluster config as config.json; it names the model.
    path = shared_data / "real_vllm_runs" / gpu / "Llama-3.1-8B" / "config.json"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    assert read_model_config(path) is get_model("meta-llama/Llama-3.1-8B")


def test_a_cluster_config_json_names_a_built_in_model(tmp_path):
    def cluster(name):
        return write_config(tmp_path, num_nodes=1, nodes=[{"instances": [{"model_name": name, "num_npus": 1}]}])
    assert read_model_config(cluster("mistralai/Mixtral-8x7B-v0.1")) is get_model("mistralai/Mixtral-8x7B-v0.1")
    with pytest.raises(ConfigError, match=r"config\.json: nodes\[0\]\.instances\[0\]\.model_name: 'x/y' is not"):
        read_model_config(cluster("x/y"))
    with pytest.raises(ConfigError, match=r"config\.json: nodes\[0\]\.instances\[0\]\.model_name: missing"):
        read_model_config(write_config(tmp_path, nodes=[]))


def test_model_from_a_table_names_where():
    with pytest.raises(ConfigError, match=r"^somewhere: missing vocab_size"):
        model_from_hf_config({k: v for k, v in MINIMAL.items() if k != "vocab_size"}, "x", "somewhere")


# ----- custom GPU -----------------------------------------------------------------------------

GPU_TABLE = {"peak_flops": 500e12, "hbm_bandwidth": 2e12, "memory_bytes": 64e9, "link_bandwidth": 100e9}


def test_custom_gpu():
    assert custom_gpu({**GPU_TABLE, "name": "mine"}) == GPUSpec("mine", 500e12, 2e12, 64e9, 100e9)
    assert custom_gpu(GPU_TABLE).name == "custom"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({**GPU_TABLE, "peak_flops": 0},
         r"cluster\.gpu_spec\.peak_flops: must be a number in \[1e\+09, 1e\+18\], got 0"),
        ({**GPU_TABLE, "memory_bytes": "80GB"}, r"cluster\.gpu_spec\.memory_bytes: must be a finite number"),
        ({"peak_flops": 1e15}, r"cluster\.gpu_spec: missing hbm_bandwidth, memory_bytes, link_bandwidth"),
        ({**GPU_TABLE, "tflops": 1}, r"cluster\.gpu_spec: unknown key 'tflops'"),
        ({**GPU_TABLE, "name": 5}, r"cluster\.gpu_spec\.name: must be a non-empty string, got 5"),
        (5, r"cluster\.gpu_spec: must be a table, got 5"),
    ],
)
def test_bad_custom_gpu_is_a_named_error(table, message):
    with pytest.raises(ConfigError, match=message):
        custom_gpu(table)


def test_moe_configs_with_dense_layers(tmp_path):
    moe = dict(MINIMAL, num_hidden_layers=4, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
    every = read_model_config(write_config(tmp_path, **moe))
    assert (every.dense_layers, every.moe_layers) == (0, 4)
    some = read_model_config(write_config(tmp_path, **moe, mlp_only_layers=[0], decoder_sparse_step=2))
    assert (some.dense_layers, some.moe_layers) == (2, 2)  # layers 1 and 3 are sparse
    first = read_model_config(write_config(tmp_path, **moe, first_k_dense_replace=1))
    assert first.moe_layers == 3
    per_layer_difference = 64 * 8 + 3 * 64 * (8 * 32) - 3 * 64 * 128  # a MoE feed-forward minus a dense one
    assert every.params - first.params == per_layer_difference
    assert first.expert_params == 3 * 64 * 32 * 3
    with pytest.raises(ConfigError, match=r"config\.json: no mixture-of-experts layer left"):
        read_model_config(write_config(tmp_path, **moe, first_k_dense_replace=4))
    with pytest.raises(ConfigError, match=r"config\.json: mlp_only_layers: must be a list of layer indices"):
        read_model_config(write_config(tmp_path, **moe, mlp_only_layers="0"))


@pytest.mark.parametrize(("name", "context"), [("meta-llama/Llama-3.1-8B", 131072), ("meta-llama/Llama-2-70b-hf", 4096),
                                               ("Qwen/Qwen3-30B-A3B", 40960), ("llama-3-8b", 0)])
def test_context_length_from_max_position_embeddings(name, context):
    assert get_model(name).context_len == context


def test_bad_max_position_embeddings_names_the_key(tmp_path):
    path = write_config(tmp_path, **dict(HF_CONFIGS["meta-llama/Llama-3.1-8B"], max_position_embeddings=0))
    with pytest.raises(ConfigError, match="max_position_embeddings: must be an integer in"):
        read_model_config(path)
