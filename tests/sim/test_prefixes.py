"""Tests for the prompts' content a workload carries (Workload.prefixes): Mooncake hash ids, the
real runs' token ids, shared system prompts (`shared_prefix`) and conversations (`multi_turn`)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realrun_helpers import write_run

from scheduler.errors import ConfigError
from scheduler.prefix import Prefix
from sim.config import config_from_dict
from sim.realrun import load_run
from sim.traces import MOONCAKE_BLOCK, TraceError, read_trace
from sim.validation import MAX_TOKENS
from sim.workload import SYNTHETIC_IDS, LengthDist, MultiTurn, SharedPrefix, TenantSpec, generate

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _tenant(name="t", prompt=10, output=5, **kw) -> TenantSpec:
    kw.setdefault("rate", 10.0)
    prompt, output = (x if isinstance(x, LengthDist) else LengthDist("fixed", (x,)) for x in (prompt, output))
    return TenantSpec(name, prompt=prompt, output=output, **kw)


def _ids_by_tenant(w, k: int) -> list[tuple[int, ...]]:
    return [p.ids for p, t in zip(w.prefixes, w.tenant) if t == k]


# ----- Mooncake hash ids ------------------------------------------------------------------------


def test_mooncake_hash_ids_become_prefixes_of_512_tokens(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [
        {"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [7, 8]},
        {"timestamp": 5, "input_length": 512, "output_length": 3, "hash_ids": [7]},
        {"timestamp": 9, "input_length": 20, "output_length": 3},  # no hash_ids: content unknown
    ])
    t = read_trace(path)
    assert t.prefixes == (Prefix((7, 8), MOONCAKE_BLOCK), Prefix((7,), MOONCAKE_BLOCK), None)
    w = generate([TenantSpec("m", trace=str(path))], np.random.default_rng(0), duration_s=100)
    assert w.prefixes == t.prefixes


def test_a_trace_without_hash_ids_has_no_prefixes(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"timestamp": 0, "input_length": 6, "output_length": 3}])
    assert read_trace(path).prefixes is None
    assert generate([TenantSpec("m", trace=str(path))], np.random.default_rng(0), duration_s=10).prefixes is None


@pytest.mark.parametrize("ids", [[], [1], [1, 2, 3]])
def test_hash_ids_that_do_not_cover_the_prompt_name_file_line_and_key(tmp_path, ids):
    path = _jsonl(tmp_path / "bad.jsonl", [
        {"timestamp": 0, "input_length": 10, "output_length": 3, "hash_ids": [1]},
        {"timestamp": 1, "input_length": 1000, "output_length": 3, "hash_ids": ids},
    ])
    with pytest.raises(TraceError, match=r"bad\.jsonl:2: hash_ids: .* ceil\(1000 / 512\) = 2") as info:
        read_trace(path)
    assert info.value.line == 2


def test_real_mooncake_blocks_repeat_as_published():
    path = DATA / "mooncake_fast25_conversation.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared trace data is optional)")
    w = generate([TenantSpec("m", trace=str(path))], np.random.default_rng(0), duration_s=1e6)
    seen: set[int] = set()
    repeated = total = 0
    for prefix in w.prefixes:  # by arrival: an unlimited cache holds every block seen before
        repeated += sum(h in seen for h in prefix.ids)
        total += len(prefix.ids)
        seen.update(prefix.ids)
    assert abs(100 * repeated / total - 36.6) < 0.5


# ----- real runs' token ids ---------------------------------------------------------------------


def _run_with_dataset(tmp_path: Path, dataset: list[dict], hash_of: bytes | None = None) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in dataset).encode()
    (tmp_path / "work.jsonl.gz").write_bytes(gzip.compress(text))
    meta = {"dataset_path": "workloads/work.jsonl", "dataset_hash": hashlib.sha256(hash_of or text).hexdigest(),
            "engine_kwargs": {"max_num_seqs": 4}}
    requests = [{"request_id": f"bench-{k}", "input_toks": row["input_toks"], "output_toks": 2,
                 "queued_ts": 10.0 - k, "first_token_ts": 20.0, "last_token_ts": 30.0}
                for k, row in enumerate(dataset)]
    return write_run(tmp_path / "gpu" / "model", meta, requests)


def test_a_run_beside_its_workload_carries_the_prompt_token_ids(tmp_path):
    dataset = [{"input_toks": 3, "input_tok_ids": [5, 6, 7]}, {"input_toks": 2, "input_tok_ids": [5, 9]}]
    run = load_run(_run_with_dataset(tmp_path, dataset))
    assert run.prefixes == (Prefix((5, 9)), Prefix((5, 6, 7)))  # by arrival: the second request came first


def test_a_run_without_its_workload_has_no_prefixes(tmp_path):
    folder = _run_with_dataset(tmp_path, [{"input_toks": 1, "input_tok_ids": [5]}])
    (tmp_path / "work.jsonl.gz").unlink()
    assert load_run(folder).prefixes is None


@pytest.mark.parametrize(("dataset", "hash_of", "match"), [
    ([{"input_toks": 3, "input_tok_ids": [5, 6]}], None, r"work\.jsonl\.gz:1: input_tok_ids: 2 ids"),
    ([{"input_toks": 1, "input_tok_ids": "x"}], None, r"work\.jsonl\.gz:1: input_tok_ids: missing"),
    ([{"input_toks": 1, "input_tok_ids": [5]}], b"other", r"dataset_hash"),
])
def test_a_workload_that_does_not_match_the_run_is_named(tmp_path, dataset, hash_of, match):
    with pytest.raises(ConfigError, match=match):
        load_run(_run_with_dataset(tmp_path, dataset, hash_of))


def test_real_run_prompts_carry_their_token_ids():
    path = DATA / "real_vllm_runs" / "RTX4090" / "Llama-3.1-8B"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared trace data is optional)")
    run = load_run(path)
    assert len(run.prefixes) == len(run.prompt_tokens) == 300
    for prefix, tokens in zip(run.prefixes, run.prompt_tokens):
        prefix.check(int(tokens))


# ----- shared system prompts --------------------------------------------------------------------


def test_a_group_shares_exactly_its_system_prompt():
    spec = _tenant(shared_prefix=SharedPrefix(groups=3, tokens=100, users_per_group=2), arrival="constant")
    w = generate([spec], np.random.default_rng(0), requests=24)
    assert w.prompt_tokens.tolist() == [110] * 24  # the system prompt, then the request's own 10
    groups = [spec.shared_prefix.group_of(c) for c in range(24)]  # constant arrivals keep the order
    assert groups[:7] == [0, 0, 1, 1, 2, 2, 0]
    for i, a in enumerate(w.prefixes):
        for j, b in enumerate(w.prefixes[:i]):
            shared = next((k for k, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), len(a.ids))
            assert shared == (100 if groups[i] == groups[j] else 0)


def test_tenants_and_groups_never_share_ids_by_accident():
    specs = [_tenant("a", shared_prefix=SharedPrefix(2, 50)), _tenant("b", shared_prefix=SharedPrefix(2, 50)),
             _tenant("c", multi_turn=MultiTurn(3, 1.0))]
    w = generate(specs, np.random.default_rng(1), duration_s=5)
    per_tenant = [set().union(*_ids_by_tenant(w, k)) for k in range(3)]
    assert not any(per_tenant[i] & per_tenant[j] for i, j in ((0, 1), (0, 2), (1, 2)))
    assert min(min(ids) for ids in per_tenant) >= SYNTHETIC_IDS


def test_plain_tenants_keep_their_requests_and_have_no_content():
    plain = _tenant("plain", rate=3.0)
    alone = generate([plain], np.random.default_rng(4), duration_s=20)
    assert alone.prefixes is None
    mixed = generate([plain, _tenant("s", rate=0.0, shared_prefix=SharedPrefix(1, 5))],
                     np.random.default_rng(4), duration_s=20)
    np.testing.assert_array_equal(mixed.arrival_s, alone.arrival_s)
    assert mixed.prefixes is None  # a tenant with content but no requests adds none
    mixed = generate([plain, _tenant("s", shared_prefix=SharedPrefix(1, 5))], np.random.default_rng(4),
                     duration_s=20)
    assert all((p is None) == (t == 0) for p, t in zip(mixed.prefixes, mixed.tenant))


# ----- conversations ----------------------------------------------------------------------------


def test_each_turn_carries_the_conversation_so_far():
    spec = TenantSpec("t", rate=0.5, prompt=LengthDist("uniform", (3, 9)), output=LengthDist("uniform", (1, 6)),
                      max_new_tokens=4, multi_turn=MultiTurn(turns=4, think_time_s=5.0),
                      shared_prefix=SharedPrefix(2, 7))
    w = generate([spec], np.random.default_rng(3), duration_s=200)
    by_start: dict[tuple, list[int]] = {}
    for i, prefix in enumerate(w.prefixes):
        by_start.setdefault(prefix.ids[:10], []).append(i)  # system prompt + the first turn's first ids
    conversations = list(by_start.values())
    assert any(len(rows) == 4 for rows in conversations)
    for rows in conversations:
        for prev, cur in zip(rows, rows[1:]):
            emitted = min(int(w.output_tokens[prev]), 4)
            head = w.prefixes[prev].ids
            assert w.prefixes[cur].ids[:len(head)] == head
            assert w.arrival_s[cur] == pytest.approx(w.arrival_s[prev] + 5.0)
            assert w.prompt_tokens[cur] > w.prompt_tokens[prev] + emitted
            after = w.prefixes[cur].ids[len(head):len(head) + emitted]
            assert len(set(after)) == emitted and not set(after) & set(head)


def test_turns_past_the_horizon_are_not_sent():
    spec = _tenant(arrival="constant", rate=1.0, multi_turn=MultiTurn(turns=3, think_time_s=4.0))
    w = generate([spec], np.random.default_rng(0), duration_s=10)
    starts = np.arange(1, 10)  # constant arrivals at 1, 2, ..., 9 s
    expected = sorted(t for s in starts for t in (s, s + 4, s + 8) if t < 10)
    np.testing.assert_allclose(w.arrival_s, expected)


def test_requests_mode_counts_turns():
    spec = _tenant(multi_turn=MultiTurn(turns=5, think_time_s=0.5))
    w = generate([spec], np.random.default_rng(0), requests=100)
    assert len(w) == 100 and len(w.prefixes) == 100


def test_the_same_seed_gives_the_same_prefixes():
    specs = [_tenant("a", prompt=LengthDist("lognormal", (3.0, 0.5)), shared_prefix=SharedPrefix(3, 20, 4)),
             _tenant("b", multi_turn=MultiTurn(3, 2.0), shared_prefix=SharedPrefix(2, 5))]
    first, again = (generate(specs, np.random.default_rng(9), duration_s=10) for _ in range(2))
    assert first.prefixes == again.prefixes
    assert generate(specs, np.random.default_rng(10), duration_s=10).prefixes != first.prefixes


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(1, 4), users=st.integers(1, 3), tokens=st.integers(1, 40), turns=st.integers(1, 4),
       think=st.floats(0, 3), shared=st.booleans(), multi=st.booleans(), seed=st.integers(0, 2**32 - 1),
       cap=st.integers(1, 30))
def test_every_prefix_covers_exactly_its_prompt(groups, users, tokens, turns, think, shared, multi, seed, cap):
    spec = TenantSpec("t", rate=3.0, prompt=LengthDist("uniform", (1, 30)), output=LengthDist("uniform", (1, 30)),
                      max_new_tokens=cap, shared_prefix=SharedPrefix(groups, tokens, users) if shared else None,
                      multi_turn=MultiTurn(turns, think) if multi or not shared else None)
    w = generate([spec, _tenant("plain")], np.random.default_rng(seed), duration_s=3)
    assert w.prefixes is None or len(w.prefixes) == len(w)
    for prefix, tokens_, tenant in zip(w.prefixes or (), w.prompt_tokens, w.tenant):
        assert (prefix is None) == (tenant == 1)
        if prefix is not None:
            prefix.check(int(tokens_))


# ----- configuration ----------------------------------------------------------------------------


def _config(**tenant) -> dict:
    return {"duration_s": 10, "tenants": [{"name": "t", "rate": 1.0, "prompt_tokens": 10, "output_tokens": 5,
                                            **tenant}]}


def test_the_keys_are_read_from_toml_tables():
    config = config_from_dict(_config(shared_prefix={"groups": 9, "users_per_group": 5, "tokens": 100},
                                      multi_turn={"turns": 4, "think_time_s": 5.0}))
    spec = config.tenants[0]
    assert spec.shared_prefix == SharedPrefix(groups=9, tokens=100, users_per_group=5)
    assert spec.multi_turn == MultiTurn(turns=4, think_time_s=5.0)
    assert config_from_dict(_config(shared_prefix={"groups": 2, "tokens": 3})).tenants[0].shared_prefix.users_per_group == 1


@pytest.mark.parametrize(("tenant", "match"), [
    ({"shared_prefix": 5}, r"tenants\[0\]\.shared_prefix: must be a table \{ groups, users_per_group, tokens \}"),
    ({"shared_prefix": {"groups": 2, "tokens": 3, "users": 1}}, r"tenants\[0\]\.shared_prefix: unknown key 'users'"),
    ({"shared_prefix": {"tokens": 3}}, r"tenants\[0\]\.shared_prefix\.groups: required"),
    ({"shared_prefix": {"groups": 2}}, r"tenants\[0\]\.shared_prefix\.tokens: required"),
    ({"shared_prefix": {"groups": 0, "tokens": 3}},
     r"tenants\[0\]\.shared_prefix\.groups: must be an integer in \[1, 1,000,000\], got 0"),
    ({"shared_prefix": {"groups": 1.5, "tokens": 3}}, r"tenants\[0\]\.shared_prefix\.groups: must be an integer"),
    ({"shared_prefix": {"groups": 1, "tokens": 3, "users_per_group": True}},
     r"tenants\[0\]\.shared_prefix\.users_per_group: must be an integer"),
    ({"shared_prefix": {"groups": 1, "tokens": 2**31}}, r"tenants\[0\]\.shared_prefix\.tokens: must be an integer in"),
    ({"multi_turn": []}, r"tenants\[0\]\.multi_turn: must be a table \{ turns, think_time_s \}"),
    ({"multi_turn": {"turns": 2}}, r"tenants\[0\]\.multi_turn\.think_time_s: required"),
    ({"multi_turn": {"turns": 0, "think_time_s": 1}}, r"tenants\[0\]\.multi_turn\.turns: must be an integer in \[1, 1,000\]"),
    ({"multi_turn": {"turns": 2, "think_time_s": -1}}, r"tenants\[0\]\.multi_turn\.think_time_s: must be a number in"),
    ({"multi_turn": {"turns": 2, "think_time_s": "5s"}}, r"tenants\[0\]\.multi_turn\.think_time_s: must be a finite"),
])
def test_bad_keys_are_named_errors(tenant, match):
    with pytest.raises(ConfigError, match=match + r".*\(tenant 't'\)"):
        config_from_dict(_config(**tenant))


def test_specs_built_in_python_are_checked_alike():
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.multi_turn\.turns: must be an integer"):
        generate([_tenant(multi_turn=MultiTurn(0, 1.0))], np.random.default_rng(0), duration_s=1)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.shared_prefix: must be a SharedPrefix"):
        generate([_tenant(shared_prefix={"groups": 1})], np.random.default_rng(0), duration_s=1)


def test_content_is_not_allowed_with_a_timestamped_trace(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"timestamp": 0, "input_length": 6, "output_length": 3}])
    table = {"duration_s": 10, "tenants": [{"name": "t", "trace": str(path), "multi_turn": {"turns": 2,
                                                                                          "think_time_s": 1}}]}
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.multi_turn: not allowed with a trace that has timestamps"):
        config_from_dict(table)


def test_a_system_prompt_beyond_the_longest_prompt_is_a_named_error():
    spec = _tenant(shared_prefix=SharedPrefix(1, MAX_TOKENS - 5))
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.shared_prefix: a prompt would hold 2,147,483,652 tokens"):
        generate([spec], np.random.default_rng(0), duration_s=1)


def test_prompts_too_many_to_hold_are_a_named_error():
    spec = _tenant(rate=1000.0, prompt=100_000, multi_turn=MultiTurn(10, 0.1))
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.multi_turn: the tenant's prompts would hold .* token ids"):
        generate([spec], np.random.default_rng(0), duration_s=10)
