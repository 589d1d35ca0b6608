"""Every malformed input to `fairbatch simulate` is a named error: exit code 2 and one stderr line
`fairbatch: error: KEY: ...` that starts with the key as the user wrote it (a TOML key such as
`tenants[1].weight`, a flag such as `--json`, or a file's path), never a traceback or a run.

One table of bad inputs (TOML values, files, flags), each run through `benchmarks.main.main` in-process;
then a property test that feeds a value of the wrong type to every key of the schema, the keys
taken from the code's own schema tables so that a new key is covered without editing this file.
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings

import sim.cli
from benchmarks.main import main
from scheduler.placement import PARAMETERS as PLACEMENT_PARAMETERS
from scheduler.policies import POLICIES, parameters
from sim.config import CLUSTER_SCHEMA, GPU_SPEC_SCHEMA, SCHEDULER_SCHEMA, TOP_SCHEMA
from sim.testing import ACCEPTS, wrong_values
from sim.validation import NUMBER, STRING
from sim.workload import LENGTH_SCHEMA, RATE_LIMIT_SCHEMA, SLO_SCHEMA, STAGE_SCHEMA, TENANT_SCHEMA

# Small and quick: a bad value that slipped through would run (and fail the test) in well under a second.
BASE = {
    "seed": 1,
    "duration_s": 3,
    "cluster": {"workers": 1},
    "tenants": [
        {"name": "a", "rate": 5.0, "prompt_tokens": 100, "output_tokens": 10},
        {"name": "b", "rate": 5.0, "arrival": "gamma", "prompt_tokens": {"dist": "uniform", "min": 10, "max": 200},
         "output_tokens": 20},
    ],
}
DELETE = object()  # a change that removes the key


# ----- writing configs --------------------------------------------------------------------------


def literal(value: Any) -> str:
    """A value as TOML text (tomllib only reads)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's; non-ASCII as it is
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {literal(v)}" for k, v in value.items()) + " }"


def document(table: dict) -> str:
    """Top-level values first, then [tables], then the [[tenants]] array of tables."""
    sections = {k: v for k, v in table.items() if isinstance(v, dict)}
    tenants = table.get("tenants") if isinstance(table.get("tenants"), list) and all(
        isinstance(t, dict) for t in table["tenants"]) and table["tenants"] else None
    lines = [f"{k} = {literal(v)}" for k, v in table.items() if k not in sections and not (k == "tenants" and tenants)]
    for name, section in sections.items():
        lines += [f"[{name}]", *(f"{k} = {literal(v)}" for k, v in section.items())]
    for tenant in tenants or ():
        lines += ["[[tenants]]", *(f"{k} = {literal(v)}" for k, v in tenant.items())]
    return "\n".join(lines) + "\n"


def changed(changes: dict[str, Any]) -> dict:
    """BASE with dotted changes applied: "tenants[1].rate_limit.token_burst" = value."""
    table = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *parents, last = _path(dotted)
        node = table
        for part in parents:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return table


def _path(dotted: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", dotted) if p]


# ----- running the command ----------------------------------------------------------------------


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # usage errors exit as argparse's do
        return stop.code


def error_line(argv: list[str], capsys) -> str:
    """The one stderr line of a run that must fail with exit code 2."""
    code = run(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code == 2, f"exit {code}; stdout: {captured.out[:300]!r}"
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairbatch: error: "), captured.err
    return lines[0]


# ----- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A bad input: `build(tmp_path, monkeypatch)` writes what it needs and returns the arguments;
    `key` is how the error must start (after "fairbatch: error: "), `{tmp}` standing for tmp_path."""

    id: str
    key: str
    build: Callable[[Path, pytest.MonkeyPatch], list[str]]


def toml(id: str, key: str, changes: dict[str, Any], *flags: str) -> Case:
    def build(tmp: Path, _) -> list[str]:
        path = tmp / "config.toml"
        path.write_text(document(changed(changes)))
        return ["simulate", "--config", str(path), *flags]
    return Case(id, key, build)


def raw(id: str, key: str, text: str | bytes) -> Case:
    """A config file with exactly these contents."""
    def build(tmp: Path, _) -> list[str]:
        path = tmp / "config.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["simulate", "--config", str(path)]
    return Case(id, key, build)


def flags(id: str, key: str, *argv: str) -> Case:
    """The built-in config, short, with these flags."""
    size = [] if {"--duration", "--requests"} & set(argv) else ["--requests", "5"]
    return Case(id, key, lambda tmp, _: ["simulate", *size, *argv])


def with_trace(id: str, key: str, contents: bytes | None, where: str = "trace", setup=None) -> Case:
    """Tenant b replays a trace file with these contents (None: no file; b"/": a directory)."""
    def build(tmp: Path, monkeypatch) -> list[str]:
        trace = tmp / "trace.csv"
        if contents == b"/":
            trace.mkdir()
        elif contents is not None:
            trace.write_bytes(contents)
        if setup is not None:
            setup(monkeypatch)
        lengths = {"dist": "empirical", "trace": str(trace), "field": "prompt"}
        change = {"tenants[1].trace": str(trace)} if where == "trace" else {"tenants[1].prompt_tokens": lengths}
        path = tmp / "config.toml"
        path.write_text(document(changed(change)))
        return ["simulate", "--config", str(path)]
    return Case(id, key, build)


def with_model(id: str, key: str, contents: str | None) -> Case:
    """[cluster] model names a config.json beside the config file with these contents (None: no file)."""
    def build(tmp: Path, _) -> list[str]:
        if contents is not None:
            (tmp / "model.json").write_text(contents)
        path = tmp / "config.toml"
        path.write_text(document(changed({"cluster.model": "model.json"})))
        return ["simulate", "--config", str(path)]
    return Case(id, key, build)


MODEL_JSON = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 100}
GPU_SPEC = {"peak_flops": 500e12, "hbm_bandwidth": 2e12, "memory_bytes": 64e9, "link_bandwidth": 1e11}


def unreadable(monkeypatch) -> None:
    def refuse(path: str) -> str:
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr("sim.traces._decode", refuse)


def unreadable_config(tmp: Path, monkeypatch) -> list[str]:
    path = tmp / "config.toml"
    path.write_text(document(BASE))
    original = Path.read_text

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", refuse)  # root reads every file, so chmod would not do
    return ["simulate", "--config", str(path)]


def json_under_a_file(tmp: Path, _) -> list[str]:
    (tmp / "file").write_text("x")
    return ["simulate", "--requests", "5", "--json", str(tmp / "file" / "run.json")]


AZURE = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,10,5\n"
TENANT_B = "tenants[1]"

CASES = [
    # wrong types and values at the top level
    toml("seed-string", "seed:", {"seed": "x"}),
    toml("seed-negative", "seed:", {"seed": -1}),
    toml("seed-beyond-128-bits", "seed:", {"seed": 2**129}),
    toml("seed-bool", "seed:", {"seed": True}),
    toml("seed-float", "seed:", {"seed": 1.5}),
    toml("duration-string", "duration_s:", {"duration_s": "long"}),
    toml("duration-nan", "duration_s:", {"duration_s": math.nan}),
    toml("duration-inf", "duration_s:", {"duration_s": math.inf}),
    toml("duration-1e300", "duration_s:", {"duration_s": 1e300}),
    toml("requests-30-digits", "requests:", {"duration_s": DELETE, "requests": 10**30}),
    toml("load-bool", "load:", {"load": True}),
    toml("load-1e-300", "load:", {"load": 1e-300}),
    toml("horizon-negative", "horizon_s:", {"horizon_s": -1}),
    toml("sample-interval-tiny", "sample_interval_s:", {"sample_interval_s": 1e-9}),
    toml("sample-interval-zero", "sample_interval_s:", {"sample_interval_s": 0}),
    toml("fast-forward-int", "fast_forward:", {"fast_forward": 1}),
    toml("cluster-number", "cluster:", {"cluster": 5}),
    toml("workers-a-billion", "cluster.workers:", {"cluster.workers": 10**9}),
    toml("workers-float", "cluster.workers:", {"cluster.workers": 2.0}),
    toml("gpu-number", "cluster.gpu:", {"cluster.gpu": 5}),
    toml("gpu-list", "cluster.gpu:", {"cluster.gpu": ["h100"]}),
    toml("tensor-parallel-3", "cluster.tensor_parallel:", {"cluster.tensor_parallel": 3}),
    toml("model-unknown", "cluster.model:", {"cluster.model": "gpt-5"}),
    with_model("model-json-missing-keys", "cluster.model: {tmp}/model.json: missing num_attention_heads",
               json.dumps({"hidden_size": 64, "num_hidden_layers": 2})),
    with_model("model-json-more-experts-per-token", "cluster.model: {tmp}/model.json: num_experts_per_tok:",
               json.dumps({**MODEL_JSON, "num_local_experts": 2, "num_experts_per_tok": 3})),
    with_model("model-json-absent", "cluster.model: {tmp}/model.json: no such file", None),
    with_model("model-json-not-json", "cluster.model: {tmp}/model.json: not valid JSON", "{layers: 2"),
    with_model("model-json-a-list", "cluster.model: {tmp}/model.json: must be a JSON object", "[1, 2]"),
    with_model("model-json-hidden-float", "cluster.model: {tmp}/model.json: hidden_size:",
               json.dumps({**MODEL_JSON, "hidden_size": 64.5})),
    toml("gpu-spec-number", "cluster.gpu_spec:", {"cluster.gpu_spec": 5}),
    toml("gpu-spec-missing-field", "cluster.gpu_spec: missing link_bandwidth",
         {"cluster.gpu_spec": {k: v for k, v in GPU_SPEC.items() if k != "link_bandwidth"}}),
    toml("gpu-spec-bandwidth-1e300", "cluster.gpu_spec.hbm_bandwidth:",
         {"cluster.gpu_spec": {**GPU_SPEC, "hbm_bandwidth": 1e300}}),
    toml("gpu-spec-unknown-key", "cluster.gpu_spec: unknown key", {"cluster.gpu_spec": {**GPU_SPEC, "tflops": 1}}),
    toml("gpu-and-gpu-spec", "cluster.gpu, cluster.gpu_spec:", {"cluster.gpu": "h100", "cluster.gpu_spec": GPU_SPEC}),
    toml("gpu-spec-too-small-for-the-model", "cluster.tensor_parallel:",
         {"cluster.gpu_spec": {**GPU_SPEC, "memory_bytes": 2e9}}),
    toml("mfu-nan", "cluster.mfu:", {"cluster.mfu": math.nan}),
    toml("mbu-string", "cluster.mbu:", {"cluster.mbu": "0.8"}),
    toml("step-overhead-1e300", "cluster.step_overhead_ms:", {"cluster.step_overhead_ms": 1e300}),
    toml("gpu-memory-utilization-zero", "scheduler.gpu_memory_utilization:", {"scheduler.gpu_memory_utilization": 0}),
    toml("gpu-memory-utilization-above-1", "scheduler.gpu_memory_utilization:",
         {"scheduler.gpu_memory_utilization": 1.5}),
    toml("num-gpu-blocks-zero", "scheduler.num_gpu_blocks:", {"scheduler.num_gpu_blocks": 0}),
    toml("max-model-len-zero", "scheduler.max_model_len:", {"scheduler.max_model_len": 0}),
    toml("old-max-seqs", "scheduler.max_seqs: renamed; allowed: scheduler.max_num_seqs (vLLM's name)",
         {"scheduler.max_seqs": 256}),
    toml("old-max-batched-tokens", "scheduler.max_batched_tokens: renamed; allowed: scheduler.max_num_batched_tokens",
         {"scheduler.max_batched_tokens": 4096}),
    toml("old-memory-fraction", "cluster.memory_fraction: renamed; allowed: scheduler.gpu_memory_utilization",
         {"cluster.memory_fraction": 0.9}),
    toml("old-cluster-num-gpu-blocks", "cluster.num_gpu_blocks: renamed; allowed: scheduler.num_gpu_blocks",
         {"cluster.num_gpu_blocks": 100}),
    toml("activations-leave-no-kv", "scheduler.block_size:",
         {"scheduler.gpu_memory_utilization": 0.205, "scheduler.max_num_batched_tokens": 65536}),
    toml("policy-list", "scheduler.policy:", {"scheduler.policy": ["vtc"]}),
    toml("policy-param-bool", "scheduler.policy_params.w_p:", {"scheduler.policy_params": {"w_p": True}}),
    toml("policy-param-inf", "scheduler.policy_params.w_q:", {"scheduler.policy_params": {"w_q": math.inf}}),
    toml("placement-params-number", "scheduler.placement_params: must be a table",
         {"scheduler.placement": "scorer", "scheduler.placement_params": 3}),
    toml("placement-param-unknown", "scheduler.placement_params: w_x not a parameter of 'scorer'; "
         "allowed: w_queue, w_kv, w_prefix",
         {"scheduler.placement": "scorer", "scheduler.placement_params": {"w_x": 1}}),
    toml("placement-param-negative", "scheduler.placement_params.w_kv: must be a number in [0, 1e6], got -1",
         {"scheduler.placement": "scorer", "scheduler.placement_params": {"w_kv": -1}}),
    toml("placement-param-bool", "scheduler.placement_params.max_imbalance: must be a number in [0, 1e6], got true",
         {"scheduler.placement": "prefix_affinity", "scheduler.placement_params": {"max_imbalance": True}}),
    toml("placement-param-of-another-placement", "scheduler.placement_params: max_imbalance not a parameter of "
         "'least_loaded'; allowed: none",
         {"scheduler.placement": "least_loaded", "scheduler.placement_params": {"max_imbalance": 4}}),
    toml("max-batched-string", "scheduler.max_num_batched_tokens:", {"scheduler.max_num_batched_tokens": "4096"}),
    toml("block-size-huge", "scheduler.block_size:", {"scheduler.block_size": 10**9}),
    toml("watermark-string", "scheduler.kv_watermark:", {"scheduler.kv_watermark": "low"}),
    toml("watermark-bool", "scheduler.kv_watermark:", {"scheduler.kv_watermark": True}),
    toml("service-weights-number", "scheduler.service_weights:", {"scheduler.service_weights": 2}),
    toml("service-weights-strings", "scheduler.service_weights[0]:", {"scheduler.service_weights": ["a", "b"]}),
    toml("service-weights-four", "scheduler.service_weights:", {"scheduler.service_weights": [1, 2, 0.1, 3]}),
    toml("service-weights-cached-negative", "scheduler.service_weights[2]:", {"scheduler.service_weights": [1, 2, -1]}),
    toml("prefix-caching-string", "scheduler.enable_prefix_caching:", {"scheduler.enable_prefix_caching": "yes"}),
    toml("shared-prefix-beyond-the-context", "tenants[0].shared_prefix.tokens: a system prompt of 5,000 tokens",
         {"tenants[0].shared_prefix": {"groups": 2, "tokens": 5_000}, "scheduler.max_model_len": 4096}),
    toml("cache-isolation-unknown", "scheduler.cache_isolation: unknown 'user'",
         {"scheduler.cache_isolation": "user"}),
    toml("service-weights-1e300", "scheduler.service_weights[0]:", {"scheduler.service_weights": [1e300, 1]}),
    toml("pool-max-queued-bool", "scheduler.max_queued:", {"scheduler.max_queued": True}),
    toml("pool-queue-below-a-prompt", "scheduler.max_queued_tokens:", {"scheduler.max_queued_tokens": 5}),
    toml("tenants-number", "tenants:", {"tenants": 5}),
    # tenants
    toml("weight-1e-300", f"{TENANT_B}.weight:", {"tenants[1].weight": 1e-300}),
    toml("weight-string", f"{TENANT_B}.weight:", {"tenants[1].weight": "heavy"}),
    toml("weight-bool", f"{TENANT_B}.weight:", {"tenants[1].weight": True}),
    toml("weight-nan", f"{TENANT_B}.weight:", {"tenants[1].weight": math.nan}),
    toml("priority-30-digits", f"{TENANT_B}.priority:", {"tenants[1].priority": 10**30}),
    toml("rate-1e300", f"{TENANT_B}.rate:", {"tenants[1].rate": 1e300}),
    toml("arrival-number", f"{TENANT_B}.arrival:", {"tenants[1].arrival": 5}),
    toml("cv-1e200", f"{TENANT_B}.cv:", {"tenants[1].cv": 1e200}),
    toml("on-s-1e-300", f"{TENANT_B}.on_s:", {"tenants[1].on_s": 1e-300}),
    toml("max-new-tokens-30-digits", f"{TENANT_B}.max_new_tokens:", {"tenants[1].max_new_tokens": 10**30}),
    toml("prompt-30-digits", f"{TENANT_B}.prompt_tokens:", {"tenants[1].prompt_tokens": 10**30}),
    toml("prompt-string", f"{TENANT_B}.prompt_tokens:", {"tenants[1].prompt_tokens": "big"}),
    toml("prompt-float", f"{TENANT_B}.prompt_tokens:", {"tenants[1].prompt_tokens": 1.5}),
    toml("lognormal-mean-1e300", f"{TENANT_B}.prompt_tokens.mean:",
         {"tenants[1].prompt_tokens": {"dist": "lognormal", "mean": 1e300, "p99": 1e301}}),
    toml("uniform-max-30-digits", f"{TENANT_B}.prompt_tokens.max:",
         {"tenants[1].prompt_tokens": {"dist": "uniform", "min": 1, "max": 10**30}}),
    toml("empirical-weights-1e308", f"{TENANT_B}.prompt_tokens.weights[0]:",
         {"tenants[1].prompt_tokens": {"dist": "empirical", "values": [1, 2], "weights": [1e308, 1e308]}}),
    toml("empirical-values-string", f"{TENANT_B}.prompt_tokens.values:",
         {"tenants[1].prompt_tokens": {"dist": "empirical", "values": "1,2"}}),
    toml("slo-inf", f"{TENANT_B}.slo.ttft_ms:", {"tenants[1].slo": {"ttft_ms": math.inf}}),
    toml("slo-number", f"{TENANT_B}.slo:", {"tenants[1].slo": 5}),
    toml("share-zero", f"{TENANT_B}.share:", {"tenants[1].share": 0}),
    toml("name-number", f"{TENANT_B}.name:", {"tenants[1].name": 5}),
    toml("trace-number", f"{TENANT_B}.trace:", {"tenants[1].trace": 5}),
    # quotas that can never admit the tenant's smallest request (prompt 10 + max_new_tokens 2048)
    toml("tokens-per-s-below-a-request", f"{TENANT_B}.rate_limit.tokens_per_s:",
         {"tenants[1].rate_limit": {"tokens_per_s": 50}}),
    toml("token-burst-below-a-request", f"{TENANT_B}.rate_limit.token_burst:",
         {"tenants[1].rate_limit": {"tokens_per_s": 1000, "token_burst": 100}}),
    toml("request-burst-half", f"{TENANT_B}.rate_limit.request_burst:",
         {"tenants[1].rate_limit": {"requests_per_s": 1, "request_burst": 0.5}}),
    toml("requests-per-s-1e-300", f"{TENANT_B}.rate_limit.requests_per_s:",
         {"tenants[1].rate_limit": {"requests_per_s": 1e-300}}),
    toml("rate-limit-string", f"{TENANT_B}.rate_limit:", {"tenants[1].rate_limit": "fast"}),
    toml("queue-below-a-prompt", f"{TENANT_B}.max_queued_tokens:", {"tenants[1].max_queued_tokens": 5}),
    toml("max-queued-zero", f"{TENANT_B}.max_queued:", {"tenants[1].max_queued": 0}),
    # staged load
    toml("stages-empty", f"{TENANT_B}.stages:", {"tenants[1].rate": DELETE, "tenants[1].stages": []}),
    toml("stages-with-rate", f"{TENANT_B}.stages:", {"tenants[1].stages": [{"rate": 1, "duration_s": 1}]}),
    toml("stage-duration-zero", f"{TENANT_B}.stages[0].duration_s:",
         {"tenants[1].rate": DELETE, "tenants[1].stages": [{"rate": 1, "duration_s": 0}]}),
    toml("stage-rate-1e300", f"{TENANT_B}.stages[1].rate:", {"tenants[1].rate": DELETE, "tenants[1].stages": [
        {"rate": 1, "duration_s": 1}, {"rate": 1e300, "duration_s": 1}]}),
    toml("stage-without-rate", f"{TENANT_B}.stages[0].rate:",
         {"tenants[1].rate": DELETE, "tenants[1].stages": [{"duration_s": 1}]}),
    toml("stages-onoff", f"{TENANT_B}.stages:", {"tenants[1].rate": DELETE, "tenants[1].arrival": "onoff",
                                                 "tenants[1].stages": [{"rate": 1, "duration_s": 1}]}),
    toml("stages-with-requests", f"{TENANT_B}.stages:", {"tenants[1].rate": DELETE,
                                                         "tenants[1].stages": [{"rate": 1, "duration_s": 1}]},
         "--requests", "5"),
    toml("stages-differ", f"{TENANT_B}.stages:", {
        "tenants[0].rate": DELETE, "tenants[0].stages": [{"rate": 1, "duration_s": 2}],
        "tenants[1].rate": DELETE, "tenants[1].stages": [{"rate": 1, "duration_s": 1}]}),
    # config files
    Case("config-is-a-directory", "{tmp}:", lambda tmp, _: ["simulate", "--config", str(tmp)]),
    Case("config-missing", "{tmp}/nope.toml:", lambda tmp, _: ["simulate", "--config", str(tmp / "nope.toml")]),
    raw("config-not-utf8", "{tmp}/config.toml:", b"seed = 1\n# \xff\xfe\n"),
    Case("config-unreadable", "{tmp}/config.toml:", unreadable_config),
    raw("config-5000-digit-integer", "{tmp}/config.toml:", "seed = " + "1" * 5000 + "\n"),
    raw("config-nested-too-deep", "{tmp}/config.toml:", "seed = " + "[" * 5000 + "]" * 5000 + "\n"),
    raw("config-not-toml", "{tmp}/config.toml:", "seed = = 1\n"),
    # trace files
    with_trace("trace-is-a-directory", f"{TENANT_B}.trace:", b"/"),
    with_trace("trace-missing", f"{TENANT_B}.trace:", None),
    with_trace("trace-not-utf8", f"{TENANT_B}.trace:", b"TIMESTAMP,ContextTokens\n\xff\xfe\n"),
    with_trace("trace-unreadable", f"{TENANT_B}.trace:", AZURE, setup=unreadable),
    with_trace("trace-30-digit-count", f"{TENANT_B}.trace:",
               b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000," + b"9" * 30 + b",5\n"),
    with_trace("mooncake-30-digit-count", f"{TENANT_B}.trace:",
               b'{"timestamp": 0, "input_length": ' + b"9" * 30 + b', "output_length": 5}\n'),
    with_trace("mooncake-timestamp-1e300", f"{TENANT_B}.trace:",
               b'{"timestamp": 0, "input_length": 5, "output_length": 5}\n'
               b'{"timestamp": 1e300, "input_length": 5, "output_length": 5}\n'),
    with_trace("gzip-truncated", f"{TENANT_B}.trace:", gzip.compress(AZURE)[:20]),
    with_trace("empirical-trace-missing", f"{TENANT_B}.prompt_tokens.trace:", None, where="prompt_tokens"),
    # output paths, checked before the run
    Case("json-is-a-directory", "--json:", lambda tmp, _: ["simulate", "--requests", "5", "--json", str(tmp)]),
    Case("json-under-a-file", "--json:", json_under_a_file),
    # flags
    flags("flag-seed-negative", "--seed:", "--seed", "-1"),
    flags("flag-seed-word", "--seed:", "--seed", "x"),
    flags("flag-workers-huge", "--workers:", "--workers", "100000"),
    flags("flag-duration-inf", "--duration:", "--duration", "inf"),
    flags("flag-load-nan", "--load:", "--load", "nan"),
    flags("flag-requests-zero", "--requests:", "--requests", "0"),
    flags("flag-requests-float", "--requests:", "--requests", "1.5"),
    flags("flag-tensor-parallel-3", "--tensor-parallel:", "--tensor-parallel", "3"),
    flags("flag-policy-unknown", "--policy:", "--policy", "lottery"),
    flags("flag-gpu-unknown", "--gpu:", "--gpu", "tpu"),
    flags("flag-unknown", "--colour:", "--colour", "blue"),
    flags("flag-duration-and-requests", "--duration, --requests:", "--duration", "10", "--requests", "5"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_named_line_and_exit_code_2(case, tmp_path, monkeypatch, capsys):
    line = error_line(case.build(tmp_path, monkeypatch), capsys)
    assert line.startswith("fairbatch: error: " + case.key.replace("{tmp}", str(tmp_path))), line


def test_nothing_is_written_or_run_when_the_output_path_is_bad(tmp_path, capsys):
    assert run(["simulate", "--requests", "5", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().out == ""  # refused before the run, not after it


def test_the_json_output_refuses_nan(tmp_path, monkeypatch, capsys):
    """allow_nan=False: were a NaN to reach the result, writing it fails instead of writing NaN."""
    monkeypatch.setattr(sim.cli, "summarize", lambda data: {"summary": {"x": math.nan}, "tenants": {},
                                                           "fairness": {}, "workers": []})
    monkeypatch.setattr(sim.cli, "format_report", lambda result, title: "")
    out = tmp_path / "run.json"
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        main(["simulate", "--requests", "5", "--json", str(out)])
    assert not out.exists()


def test_a_run_without_any_request_prints_dashes_and_writes_null(tmp_path, capsys):
    path, out = tmp_path / "idle.toml", tmp_path / "run.json"
    path.write_text(document(changed({"tenants[0].rate": 0.0, "tenants[1].rate": 0.0})))
    assert main(["simulate", "--config", str(path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert not re.search(r"\bnan\b", printed, re.I) and "Jain -" in printed
    document_ = json.loads(out.read_text())
    assert document_["fairness"]["jain_index"] is None and document_["summary"]["request_throughput"] is None


# ----- every key of the schema, fed a value of the wrong type -----------------------------------

LENGTH_BASES = [  # one valid table per way of writing a length, so each key of LENGTH_SCHEMA has one
    {"dist": "fixed", "value": 5},
    {"dist": "uniform", "min": 1, "max": 9},
    {"dist": "lognormal", "mean": 100, "p99": 400},
    {"dist": "empirical", "values": [1, 2], "weights": [1, 1]},
    {"dist": "empirical", "trace": "TRACE", "field": "prompt"},
]
SUBTABLES = {"slo": SLO_SCHEMA, "rate_limit": RATE_LIMIT_SCHEMA}


def schema_keys() -> list[tuple[str, str, dict]]:
    """(dotted key, the kind it takes, the changes that give it a valid context) for every key."""
    keys = [(k, kind, {}) for k, kind in TOP_SCHEMA.items()]
    keys += [(f"cluster.{k}", kind, {}) for k, kind in CLUSTER_SCHEMA.items()]
    keys += [(f"cluster.gpu_spec.{k}", kind, {"cluster.gpu_spec": dict(GPU_SPEC)})
             for k, kind in GPU_SPEC_SCHEMA.items()]
    keys += [(f"scheduler.{k}", kind, {}) for k, kind in SCHEDULER_SCHEMA.items()]
    keys += [(f"tenants[1].{k}", kind, {}) for k, kind in TENANT_SCHEMA.items()]
    for table, schema in SUBTABLES.items():
        keys += [(f"tenants[1].{table}.{k}", kind, {}) for k, kind in schema.items()]
    keys += [(f"tenants[1].stages[0].{k}", kind, {"tenants[1].rate": DELETE,  # a context of its own per key
                                                  "tenants[1].stages": [{"rate": 1.0, "duration_s": 2.0}]})
             for k, kind in STAGE_SCHEMA.items()]
    for dist, schema in LENGTH_SCHEMA.items():
        for k, kind in {"dist": STRING, **schema}.items():
            base = next(b for b in LENGTH_BASES if b["dist"] == dist and k in b)
            keys.append((f"tenants[1].prompt_tokens.{k}", kind, {"tenants[1].prompt_tokens": dict(base)}))
    for policy in POLICIES:
        keys += [(f"scheduler.policy_params.{p}", NUMBER, {"scheduler.policy": policy}) for p in parameters(policy)]
    for placement, allowed in PLACEMENT_PARAMETERS.items():
        keys += [(f"scheduler.placement_params.{p}", NUMBER, {"scheduler.placement": placement}) for p in allowed]
    return keys


SCHEMA_KEYS = schema_keys()


def test_the_schema_walk_covers_every_table():
    kinds = {kind for _, kind, _ in SCHEMA_KEYS}
    assert kinds <= set(ACCEPTS) and len(SCHEMA_KEYS) > 60


def check_wrong_type(dotted: str, kind: str, context: dict, value: Any, folder: Path, capsys) -> None:
    changes = {**context, dotted: value}
    if dotted == "requests":  # requests and duration_s exclude each other
        changes["duration_s"] = DELETE
    table = changed(changes)
    trace = folder / "lengths.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n")
    text = document(table).replace('"TRACE"', json.dumps(str(trace)))
    path = folder / "config.toml"
    path.write_text(text)
    line = error_line(["simulate", "--config", str(path)], capsys)
    assert line.startswith(f"fairbatch: error: {dotted}"), line


@pytest.mark.parametrize(("dotted", "kind", "context"), SCHEMA_KEYS, ids=[k for k, _, _ in SCHEMA_KEYS])
def test_a_wrong_type_at_any_key_is_named(dotted, kind, context, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("schema")

    @settings(max_examples=3, database=None)
    @given(wrong_values(kind))
    def check(value):
        check_wrong_type(dotted, kind, context, value, folder, capsys)

    check()


@pytest.mark.slow
@pytest.mark.parametrize(("dotted", "kind", "context"), SCHEMA_KEYS, ids=[k for k, _, _ in SCHEMA_KEYS])
def test_many_wrong_types_at_any_key_are_named(dotted, kind, context, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("schema")

    @settings(max_examples=60)
    @given(wrong_values(kind))
    def check(value):
        check_wrong_type(dotted, kind, context, value, folder, capsys)

    check()
