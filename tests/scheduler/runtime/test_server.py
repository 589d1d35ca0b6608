"""The OpenAI-compatible server over real HTTP on loopback, on asyncio and trio."""

from __future__ import annotations

import json
from contextlib import aclosing

import anyio
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import client, config, running_server, sse_events

from scheduler.actions import Rejected, RejectReason
from scheduler.runtime import RequestRejected, synthetic_token
from scheduler.runtime.server import refusal

pytestmark = pytest.mark.anyio
TOKENS = [synthetic_token(i) for i in range(40)]


async def test_a_streamed_completion_arrives_token_by_token_with_usage():
    async with running_server() as (url, runtime, _), client(url) as http:
        body = {"model": "llama-3-8b", "prompt": "Say hello", "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events((await response.aread()).decode())
    assert [e["choices"][0]["text"] for e in events[:5]] == TOKENS[:5]
    assert events[5]["choices"][0]["finish_reason"] == "length"
    assert events[6]["choices"] == [] and events[6]["usage"] == {"prompt_tokens": 9, "completion_tokens": 5,
                                                                 "total_tokens": 14}  # one token per byte
    assert events[7] == "[DONE]" and len(events) == 8
    assert {e["id"] for e in events[:7]} == {events[0]["id"]} and events[0]["object"] == "text_completion"


async def test_a_whole_completion_and_a_chat_completion():
    async with running_server() as (url, runtime, _), client(url, "key-bob") as http:
        completion = (await http.post("/v1/completions", json={"prompt": "x" * 40, "max_tokens": 3})).json()
        messages = [{"role": "user", "content": "hello"}]
        chat = (await http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4})).json()
        async with http.stream("POST", "/v1/chat/completions", json={"messages": messages, "stream": True,
                                                                     "max_tokens": 2}) as response:
            events = sse_events((await response.aread()).decode())
    assert completion["choices"][0]["text"] == "".join(TOKENS[:3])
    assert completion["usage"] == {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}
    assert chat["object"] == "chat.completion" and chat["choices"][0]["finish_reason"] == "length"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "".join(TOKENS[:4])}
    assert chat["usage"]["prompt_tokens"] == len("user: hello\nassistant: ")  # the chat template's text
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": TOKENS[0]}
    assert events[1]["choices"][0]["delta"] == {"content": TOKENS[1]}
    assert events[2]["choices"][0]["finish_reason"] == "length" and events[3] == "[DONE]"
    assert runtime.counts["finished"] == 3


async def test_models_and_health():
    async with running_server() as (url, _, _), client(url, key=None) as http:
        models = (await http.get("/v1/models")).json()
        health = await http.get("/health")
        missing = await http.get("/v1/nothing")
        wrong_method = await http.get("/v1/completions")
    assert [m["id"] for m in models["data"]] == ["llama-3-8b"]
    assert health.status_code == 200 and health.json() == {"status": "ok", "workers": 2, "running": 0, "waiting": 0}
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "http_404"
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


async def test_a_missing_or_unknown_key_is_refused_unless_there_is_a_default_tenant():
    async with running_server() as (url, _, _):
        async with client(url, key=None) as http:
            missing = await http.post("/v1/completions", json={"prompt": "x"})
        async with client(url, key="key-mallory") as http:
            unknown = await http.post("/v1/completions", json={"prompt": "x"})
    assert missing.status_code == unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key" and unknown.headers["www-authenticate"] == "Bearer"
    async with running_server(config(default_tenant="bob")) as (url, runtime, registry):
        async with client(url, key="key-mallory") as http:
            served = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        finished = _sample(registry, "fairbatch_requests_total", tenant="bob", outcome="finished")
    assert served.status_code == 200 and finished == 1


async def test_rejections_map_to_status_codes_with_the_reason():
    async with running_server() as (url, _, _):
        async with client(url, "key-limited") as http:
            first = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
            limited = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        async with client(url) as http:
            too_long = await http.post("/v1/completions", json={"prompt": "y" * 4000, "max_tokens": 3000})
    assert first.status_code == 200
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == limited.json()["error"]["reason"] == "rate_limited"
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "prompt_too_long"


@pytest.mark.parametrize("reason,status", [("rate_limited", 429), ("queue_full", 429), ("invalid_request", 400),
                                           ("prompt_too_long", 400), ("no_workers", 503)])
def test_every_reason_has_its_status(reason, status):
    refused = refusal(RequestRejected(Rejected("r", RejectReason(reason), "detail", 2.5)))
    assert refused.status == status and refused.body["error"]["code"] == reason
    assert ("Retry-After" in refused.headers) == (status == 429)
    if status == 429:
        assert refused.headers["Retry-After"] == "3"


BAD_BODIES = [
    (b'{"prompt": "x", ', "body"),
    (b'{"prompt": "x", "max_tokens": "ten"}', "max_tokens"),
    (b'{"prompt": "x", "max_tokens": -3}', "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 100000000}', "max_tokens"),
    (b'{"prompt": 42}', "prompt"),
    (b'{"prompt": "x", "stream": "please"}', "stream"),
    (b'{"prompt": "x", "model": "gpt-5"}', "model"),
    (json.dumps({"prompt": "z" * 10_000}).encode(), "body"),
]


async def test_bad_input_gets_a_400_naming_the_field_and_others_are_still_served():
    async with running_server() as (url, runtime, registry), client(url) as http:
        answers = []
        for body, _ in BAD_BODIES:
            response = await http.post("/v1/completions", content=body, headers={"content-type": "application/json"})
            answers.append((response.status_code, response.json()["error"]))
        chat = await http.post("/v1/chat/completions", json={"messages": [{"role": "user"}], "max_tokens": 0})
        fine = await http.post("/v1/completions", json={"prompt": "still here", "max_tokens": 2})
        invalid = _sample(registry, "fairbatch_rejections_total", tenant="alice", reason="invalid_request")
    for (status, error), (_, param) in zip(answers, BAD_BODIES):
        assert status == 400 and error["param"] == param and error["message"].startswith(param)
    assert "from 1 to 4000, got -3" in answers[2][1]["message"]
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "max_tokens"
    assert fine.status_code == 200 and fine.json()["usage"]["completion_tokens"] == 2
    assert invalid == len(BAD_BODIES) + 1 and runtime.counts["submitted"] == 1


async def test_the_official_openai_client_works_against_it():
    async with running_server() as (url, _, _):
        ai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="key-alice", max_retries=0)
        try:
            completion = await ai.completions.create(model="llama-3-8b", prompt="Once upon a time", max_tokens=4)
            stream = await ai.chat.completions.create(model="llama-3-8b", max_tokens=3, stream=True,
                                                      messages=[{"role": "user", "content": "hi"}],
                                                      stream_options={"include_usage": True})
            async with stream:
                chunks = [chunk async for chunk in stream]
            models = await ai.models.list()
            with pytest.raises(openai.BadRequestError) as bad:
                await ai.completions.create(model="llama-3-8b", prompt="x", max_tokens=-1)
        finally:
            await ai.close()
    assert completion.choices[0].text == "".join(TOKENS[:4]) and completion.usage.completion_tokens == 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TOKENS[:3])
    assert chunks[-1].usage.total_tokens == len("user: hi\nassistant: ") + 3
    assert [m.id for m in models.data] == ["llama-3-8b"]
    assert bad.value.status_code == 400 and bad.value.body["param"] == "max_tokens"


async def test_a_client_that_disconnects_mid_stream_cancels_its_request_and_frees_its_blocks():
    async with running_server(speed=1.0) as (url, runtime, registry), client(url) as http:
        body = {"prompt": "tell me everything", "max_tokens": 2000, "stream": True}
        received = []
        async with http.stream("POST", "/v1/completions", json=body) as response:
            async with aclosing(response.aiter_lines()) as lines:
                async for line in lines:
                    received += [line] if line else []
                    if len(received) == 3:
                        break
            assert runtime.scheduler.num_running == 1
        with anyio.fail_after(5):  # the server notices the closed connection
            while runtime.live:
                await anyio.sleep(0.01)
        used = [worker.pool.used for worker in runtime.scheduler.workers.values()]
        cancelled = _sample(registry, "fairbatch_requests_total", tenant="alice", outcome="cancelled")
    assert len(received) == 3 and runtime.counts["cancelled"] == 1 and runtime.counts["finished"] == 0
    assert used == [0, 0] and cancelled == 1


async def test_metrics_parse_with_prometheus_clients_own_parser():
    async with running_server() as (url, _, _):
        async with client(url) as http:
            for _ in range(3):
                await http.post("/v1/completions", json={"prompt": "abcdefgh", "max_tokens": 4})
        async with client(url, "key-limited") as http:
            await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
            await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        async with client(url, key=None) as http:
            response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("fairbatch_requests_total", tenant="alice", outcome="finished") == 3
    assert value("fairbatch_rejections_total", tenant="limited", reason="rate_limited") == 1
    assert value("fairbatch_prompt_tokens_total", tenant="alice") == 3 * len("abcdefgh")
    assert value("fairbatch_generation_tokens_total", tenant="alice") == 12
    assert value("fairbatch_time_to_first_token_seconds_count", tenant="alice") == 3
    assert value("fairbatch_time_per_output_token_seconds_count", tenant="alice") == 3
    assert value("fairbatch_e2e_request_latency_seconds_count", tenant="alice") == 3
    assert value("fairbatch_request_queue_time_seconds_count", tenant="alice") == 3
    assert value("fairbatch_e2e_request_latency_seconds_bucket", tenant="alice", le="600.0") == 3
    assert value("fairbatch_num_requests_running") == 0 and value("fairbatch_preemptions_total") == 0
    assert value("fairbatch_num_requests_waiting", tenant="bob") == 0
    assert value("fairbatch_kv_cache_usage_ratio", worker="0") == 0
    assert value("fairbatch_tenant_service", tenant="alice") == 3 * (8 + 2 * 4)  # w_p = 1, w_q = 2
    assert {labels.get("tenant") for (name, labels) in [(n, dict(l)) for n, l in samples]
            if name == "fairbatch_requests_total"} == {"alice", "bob", "limited", "other"}


def _sample(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0
