"""GPU and model catalogue: published figures, derived sizes, lookup errors."""

import dataclasses

import pytest

from scheduler.errors import ConfigError
from sim.hardware import GPUS, MODELS, GPUSpec, ModelSpec, get_gpu, get_model


def test_catalogue_keys():
    assert set(GPUS) == {"h100", "a100-80gb", "h200", "l40s"}
    assert set(MODELS) == {"llama-3-8b", "llama-3-70b", "mistral-7b", "qwen2.5-14b"}


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
    # The attention cost assumes heads * head_dim spans the hidden size, and GQA groups are whole.
    assert model.heads * model.head_dim == model.hidden
    assert model.heads % model.kv_heads == 0


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


@pytest.mark.parametrize("bad", ["x", "H100", "", "b200", None, ["h100"]])
def test_unknown_gpu_names_key_and_allowed(bad):
    with pytest.raises(ConfigError) as info:
        get_gpu(bad)
    message = str(info.value)
    assert message.startswith("cluster.gpu:")
    assert "allowed: a100-80gb, h100, h200, l40s" in message


@pytest.mark.parametrize("bad", ["llama-3-7b", "LLAMA-3-8B", 8, None])
def test_unknown_model_names_key_and_allowed(bad):
    with pytest.raises(ConfigError) as info:
        get_model(bad)
    message = str(info.value)
    assert message.startswith("cluster.model:")
    assert "allowed: llama-3-70b, llama-3-8b, mistral-7b, qwen2.5-14b" in message
    assert repr(bad) in message


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        get_gpu("x")
