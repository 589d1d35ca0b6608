import pytest

from scheduler.errors import ConfigError
from sim.config import DEFAULT_CONFIG, config_to_dict, load_config

from sim_configs import small_config

SCENARIOS = __import__("pathlib").Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"


def test_default_config_loads_with_four_tenants_on_two_h100s():
    config = load_config()
    assert [t.name for t in config.tenants] == ["enterprise", "startup", "research", "hobbyist"]
    assert (config.cluster.workers, config.cluster.gpu, config.cluster.model) == (2, "h100", "llama-3-8b")
    assert "[[tenants]]" in DEFAULT_CONFIG


def test_overrides_replace_file_values_and_requests_replaces_duration():
    config = load_config(None, {"scheduler.policy": "fcfs", "cluster.workers": 3, "requests": 50})
    assert config.policy.policy == "fcfs"
    assert config.cluster.workers == 3
    assert (config.requests, config.duration_s) == (50, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scheduler": {"policy": "lottery"}}, r"scheduler\.policy: unknown policy 'lottery'; allowed: dlpm, drr, edf, fcfs, lcf, priority, slo, vtc"),
        ({"scheduler": {"placement": "random"}}, r"scheduler\.placement: unknown placement 'random'; allowed:"),
        ({"scheduler": {"policy_params": {"alpha": 1}}}, r"scheduler\.policy_params: alpha not a parameter"),
        ({"scheduler": {"max_num_seqs": 0}},
         r"scheduler\.max_num_seqs: must be an integer in \[1, 2,147,483,647\], got 0"),
        ({"scheduler": {"max_num_seqs": 300, "max_num_batched_tokens": 256}}, r"scheduler\.max_num_seqs: must be <="),
        ({"scheduler": {"bogus": 1}}, r"scheduler: unknown key 'bogus'"),
        ({"cluster": {"workers": 0}}, r"cluster\.workers: must be an integer in \[1, 1,024\], got 0"),
        ({"cluster": {"gpu": "tpu"}}, r"cluster\.gpu: unknown GPU 'tpu'; allowed: a100-40gb, a100-80gb, b200, h100, h200, l40s, rtx-4090, "
                                         r"rtx-pro-6000"),
        ({"cluster": {"model": "gpt-5"}}, r"cluster\.model: unknown model 'gpt-5'"),
        ({"cluster": {"model": "llama-3-70b"}}, r"do not fit"),
        ({"duration_s": -1}, r"duration_s: must be a number in \(0, 31,536,000\], got -1"),
        ({"load": 0}, r"load: must be a number in \[1e-06, 1,000,000\], got 0"),
        ({"tenants": []}, r"tenants: at least one"),
        ({"colour": "blue"}, r"config: unknown key 'colour'"),
    ],
)
def test_bad_config_names_the_key_and_the_allowed_values(change, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**change)


def test_requests_must_be_positive_and_exclusive_with_duration():
    with pytest.raises(ConfigError, match=r"requests: must be an integer in \[1, 50,000,000\], got 0"):
        load_config(None, {"requests": 0})
    with pytest.raises(ConfigError, match=r"duration_s, requests: give one of them"):
        small_config(requests=10)


def test_bad_tenant_values_name_the_tenant_and_key():
    bad = {"name": "carol", "rate": -1.0, "prompt_tokens": 10, "output_tokens": 10}
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.rate: must be a number in \[0, 1,000,000\], got -1.*carol"):
        small_config(tenants=[bad])
    bad = {"name": "dave", "weight": 0, "rate": 1.0, "prompt_tokens": 10, "output_tokens": 10}
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.weight.*dave"):
        small_config(tenants=[bad])


def test_duplicate_tenant_names_are_refused():
    t = {"name": "same", "rate": 1.0, "prompt_tokens": 10, "output_tokens": 10}
    with pytest.raises(ConfigError, match="used twice"):
        small_config(tenants=[t, t])


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_trace_paths_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,10,5\n")
    (tmp_path / "c.toml").write_text('[[tenants]]\nname = "x"\ntrace = "t.csv"\n')
    config = load_config(tmp_path / "c.toml")
    assert config.tenants[0].trace == str((tmp_path / "t.csv").resolve())


def test_config_round_trips_to_a_json_able_dict():
    import json

    document = config_to_dict(small_config())
    json.dumps(document, allow_nan=False)
    assert document["scheduler"]["max_num_batched_tokens"] == 1024
    assert document["scheduler"]["gpu_memory_utilization"] == 0.9  # where the TOML takes it
    assert "gpu_memory_utilization" not in document["cluster"] and "num_gpu_blocks" not in document["cluster"]
    assert document["tenants"][1]["name"] == "b"


def test_vllm_engine_limits_under_vllm_names():
    config = load_config(None, {"scheduler.max_num_seqs": 64, "scheduler.max_num_batched_tokens": 2048,
                                "scheduler.gpu_memory_utilization": 0.5, "scheduler.max_model_len": 8192})
    sched, cluster = config.scheduler, config.cluster
    assert (sched.max_num_seqs, sched.max_num_batched_tokens, sched.max_model_len) == (64, 2048, 8192)
    assert cluster.gpu_memory_utilization == 0.5 and cluster.num_gpu_blocks is None
    assert cluster.kv_blocks(sched) == cluster.cost_model().kv_blocks(16, 2048, 64) > 0
    pinned = load_config(None, {"scheduler.num_gpu_blocks": 2588})
    assert pinned.cluster.kv_blocks(pinned.scheduler) == 2588


def test_max_model_len_defaults_to_the_models_context_length():
    assert load_config().scheduler.max_model_len is None  # the short names keep no context length
    llama2 = load_config(None, {"cluster.model": "meta-llama/Llama-2-7b-hf"})
    assert llama2.scheduler.max_model_len == 4096
    assert load_config(None, {"cluster.model": "meta-llama/Llama-3.1-8B", "scheduler.max_model_len": 1000}) \
        .scheduler.max_model_len == 1000
    with pytest.raises(ConfigError, match=r"scheduler.max_model_len: 8,192 is longer than meta-llama/Llama-2-7b-hf's "
                                          r"context length \(max_position_embeddings 4,096\); allowed: <= 4,096"):
        load_config(None, {"cluster.model": "meta-llama/Llama-2-7b-hf", "scheduler.max_model_len": 8192})


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.glob("*.toml")))
def test_example_scenarios_load(scenario, shared_data):
    config = load_config(SCENARIOS / scenario)
    assert config.tenants


def test_model_config_json_resolves_relative_to_the_config_file(tmp_path):
    import json

    from sim.hardware import HF_CONFIGS, get_model

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config.json").write_text(json.dumps(HF_CONFIGS["mistralai/Mixtral-8x7B-v0.1"]))
    (tmp_path / "c.toml").write_text('[cluster]\nmodel = "models/config.json"\ntensor_parallel = 2\n'
                                     '[[tenants]]\nname = "x"\nrate = 1.0\nprompt_tokens = 10\noutput_tokens = 5\n')
    config = load_config(tmp_path / "c.toml")
    assert config.cluster.model == str((tmp_path / "models" / "config.json").resolve())
    assert config.cluster.cost_model().model.params == get_model("mistralai/Mixtral-8x7B-v0.1").params
    assert config_to_dict(config)["cluster"]["model"] == config.cluster.model


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-30B-A3B", "llama-3-8b"])
def test_built_in_models_load_by_repo_id_or_short_name(model):
    config = small_config(cluster={"model": model})
    assert config.cluster.model == model
    assert config.cluster.cost_model().model.name == model


def with_cluster(**cluster):
    from sim.config import config_from_dict

    return config_from_dict({"cluster": cluster, "tenants": [{"name": "a", "rate": 1.0, "prompt_tokens": 10,
                                                                      "output_tokens": 5}]})


def test_custom_gpu_spec_replaces_the_catalogue():
    spec = {"name": "mine", "peak_flops": 500e12, "hbm_bandwidth": 2e12, "memory_bytes": 64e9, "link_bandwidth": 1e11}
    config = with_cluster(gpu_spec=spec)
    assert config.cluster.gpu == "mine"
    assert config.cluster.cost_model().gpu.hbm_bandwidth == 2e12
    assert config_to_dict(config)["cluster"]["gpu_spec"]["peak_flops"] == 500e12
    with pytest.raises(ConfigError, match=r"^cluster\.gpu, cluster\.gpu_spec: give one of them, not both"):
        with_cluster(gpu="h100", gpu_spec=spec)
    with pytest.raises(ConfigError, match=r"^cluster\.gpu_spec\.memory_bytes: must be a number in"):
        with_cluster(gpu_spec={**spec, "memory_bytes": 1e20})


def test_models_and_gpus_only_change_what_they_describe():
    assert load_config().cluster.gpu_spec is None
    assert config_to_dict(load_config())["cluster"]["model"] == "llama-3-8b"
