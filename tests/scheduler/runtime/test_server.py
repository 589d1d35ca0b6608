"""The OpenAI-compatible server over real HTTP on loopback, on asyncio and trio."""

from __future__ import annotations

import json
import logging
import re
from contextlib import aclosing
from functools import partial

import anyio
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import TEST_CONFIG, client, config, running_server, sse_events

from scheduler.actions import Rejected, RejectReason
from scheduler.runtime import RequestRejected, synthetic_token
from scheduler.runtime import api
from scheduler.runtime.server import EventStream, _batches, refusal

pytestmark = pytest.mark.anyio
TOKENS = [synthetic_token(i) for i in range(40)]
HANG_GUARD_S = 30  # only so that a broken server fails the test instead of hanging it


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


async def test_a_stream_interval_sends_the_first_token_at_once_then_several_per_event():
    async with running_server(config(stream_interval=4)) as (url, _, _), client(url) as http:
        body = {"prompt": "Say hello", "max_tokens": 10, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            events = sse_events((await response.aread()).decode())
    texts = [e["choices"][0]["text"] for e in events[:-1] if e["choices"][0]["finish_reason"] is None]
    assert "".join(texts) == "".join(TOKENS[:10]) and 2 <= len(texts) <= 4  # 1, 4, 4, 1 tokens at most


class OneAtATime:
    """A handle's consumer side whose tokens arrive one per wait (none pile up)."""

    def __init__(self, tokens) -> None:
        self.tokens = iter(tokens)

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        await anyio.sleep(0)
        try:
            return next(self.tokens)
        except StopIteration:
            raise StopAsyncIteration from None

    def buffered(self) -> list[str]:
        return []


@pytest.mark.parametrize("interval,writes", [(1, [[t] for t in "abcdef"]), (4, [["a"], list("bcde"), ["f"]])])
async def test_batches_send_the_first_token_at_once_then_every_interval_tokens(interval, writes):
    text = api.StopText()
    assert [pieces async for pieces in _batches(OneAtATime("abcdef"), text, interval)] == writes


class PiledUp:
    """A handle's consumer side that finds all its tokens waiting when it first wakes, then the end."""

    reason = "length"

    def __init__(self, tokens) -> None:
        self.waiting = list(tokens)

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if not self.waiting:
            raise StopAsyncIteration
        return self.waiting.pop(0)

    def buffered(self) -> list[str]:
        tokens, self.waiting = self.waiting, []
        return tokens


@pytest.mark.parametrize("kind", [api.COMPLETION, api.CHAT])
async def test_tokens_that_piled_up_go_out_in_one_write_still_one_event_per_token(kind):
    request = api.Completion(kind, "llama-3-8b", "hi", 2, 16, stream=True)
    sent = []

    async def send(message) -> None:
        sent.append(message)

    await EventStream(PiledUp(TOKENS[:4]), request, "cmpl-1", 3)._stream(send)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 2  # the four tokens, then the end
    assert bodies[0] == b"".join(api.sse(api.chunk(request, "cmpl-1", 3, token, first=i == 0))
                                 for i, token in enumerate(TOKENS[:4]))
    events = sse_events(b"".join(bodies).decode())
    assert len(events) == 6 and events[4]["choices"][0]["finish_reason"] == "length" and events[5] == "[DONE]"


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
        with anyio.fail_after(HANG_GUARD_S):  # the server notices the closed connection
            while runtime.live:
                await anyio.sleep(0.01)
        used = [runtime.scheduler.kv_usage(w).used for w in runtime.scheduler.worker_ids()]
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


# ----- hardening: slow and vanishing clients ---------------------------------------------------------


async def _raw(url: str, data: bytes):
    """A raw connection to the server that has sent `data`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    await stream.send(data)
    return stream


async def _until_closed(stream) -> bytes:
    """What the server sends until it closes the connection."""
    received = b""
    with anyio.fail_after(HANG_GUARD_S):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


PARTIAL_BODY = (b"POST /v1/completions HTTP/1.1\r\nHost: fairbatch\r\nAuthorization: Bearer key-alice\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\": \"")


async def test_a_client_that_disconnects_mid_body_is_a_debug_line_and_the_server_keeps_serving(caplog):
    caplog.set_level(logging.DEBUG, logger="fairbatch.server")
    async with running_server() as (url, runtime, _):
        stream = await _raw(url, PARTIAL_BODY)
        await stream.aclose()
        with anyio.fail_after(HANG_GUARD_S):
            while not any("disconnected before sending its whole request body" in r.getMessage()
                          for r in caplog.records):
                await anyio.sleep(0.01)
        async with client(url) as http:
            served = await http.post("/v1/completions", json={"prompt": "still here", "max_tokens": 2})
    assert served.status_code == 200 and runtime.counts["submitted"] == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_a_stalled_body_is_answered_408_and_the_connection_closed():
    async with running_server(config(read_timeout_s=0.5)) as (url, runtime, _):
        stream = await _raw(url, PARTIAL_BODY)
        answer = await _until_closed(stream)
        async with client(url) as http:
            served = await http.post("/v1/completions", json={"prompt": "still here", "max_tokens": 2})
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in body.replace(b" ", b"")
    assert served.status_code == 200 and runtime.counts["submitted"] == 1


async def test_a_client_stalled_in_its_headers_is_disconnected():
    async with running_server(config(keep_alive_timeout_s=0.5)) as (url, _, _):
        stream = await _raw(url, b"POST /v1/completions HTTP/1.1\r\nHost: fairbatch\r\nContent-Le")
        assert await _until_closed(stream) == b""
        async with client(url) as http:
            assert (await http.get("/health")).status_code == 200


# ----- hardening: tenants see only their own ---------------------------------------------------------


async def test_response_ids_are_random():
    async with running_server() as (url, _, _), client(url) as http:
        ids = [(await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})).json()["id"]
               for _ in range(3)]
        chat = (await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                              "max_tokens": 1})).json()["id"]
    assert all(re.fullmatch(r"cmpl-[0-9a-f]{32}", rid) for rid in ids) and len(set(ids)) == 3
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", chat)


POOL_CAP = TEST_CONFIG.replace('policy = "vtc"', 'policy = "vtc"\nmax_queued = 1')


async def test_a_full_pool_queue_is_refused_without_the_pools_figures():
    async with running_server(config(POOL_CAP), speed=50.0) as (url, runtime, _):  # slow: nothing ends
        scheduler = runtime.scheduler
        fill = {"prompt": [1] * (scheduler.max_sequence_tokens - 100), "max_tokens": 100}  # a worker's KV, nearly
        async with client(url) as alice, anyio.create_task_group() as group:
            for running_waiting in ((1, 0), (2, 0), (2, 1)):  # one request per worker, then one that waits
                group.start_soon(partial(alice.post, "/v1/completions", json=fill))
                with anyio.fail_after(HANG_GUARD_S):
                    while (scheduler.num_running, scheduler.num_waiting) != running_waiting:
                        await anyio.sleep(0.01)
            async with client(url, "key-bob") as bob:
                refused = await bob.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
            group.cancel_scope.cancel()
    error = refused.json()["error"]
    assert refused.status_code == 429 and error["code"] == "queue_full" and "retry-after" in refused.headers
    assert "the pool's queue is full" in error["message"] and not re.search(r"\d", error["message"])


NEVER_FITS = TEST_CONFIG.replace("rate_limit = { requests_per_s = 0.01, request_burst = 1 }",
                                 "rate_limit = { tokens_per_s = 50, token_burst = 100 }")


async def test_a_request_its_quota_can_never_admit_is_a_400_without_retry_after():
    async with running_server(config(NEVER_FITS)) as (url, runtime, _), client(url, "key-limited") as http:
        never = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 200})
        fits = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 20})
    error = never.json()["error"]
    assert never.status_code == 400 and "retry-after" not in never.headers and error["code"] == "rate_limited"
    assert "can never fit the tenant's bucket of 100" in error["message"] and fits.status_code == 200


def test_a_rate_limit_that_can_never_pass_has_no_retry_after_and_a_queue_cap_one_second():
    never = refusal(RequestRejected(Rejected("r", RejectReason.RATE_LIMITED, "can never fit", None)))
    full = refusal(RequestRejected(Rejected("r", RejectReason.QUEUE_FULL, "the pool's queue is full", None)))
    assert never.status == 400 and "Retry-After" not in never.headers
    assert full.status == 429 and full.headers["Retry-After"] == "1"


async def test_metrics_and_the_pools_figures_need_the_metrics_key_when_one_is_set():
    async with running_server(config(metrics_key="scrape-secret")) as (url, _, _):
        async with client(url, key=None) as anyone, client(url) as tenant, client(url, "scrape-secret") as scraper:
            answers = [await http.get("/metrics") for http in (anyone, tenant, scraper)]
            health = [(await http.get("/health")).json() for http in (anyone, scraper)]
    assert [a.status_code for a in answers] == [401, 401, 200]
    assert answers[0].json()["error"]["code"] == "invalid_api_key"
    assert answers[0].headers["www-authenticate"] == "Bearer"
    assert "fairbatch_requests_total" in answers[2].text
    assert health == [{"status": "ok"}, {"status": "ok", "workers": 2, "running": 0, "waiting": 0}]


# ----- hardening: OpenAI parity -------------------------------------------------------------------------


async def test_an_unknown_model_is_404_model_not_found_and_models_can_be_retrieved_by_id():
    async with running_server() as (url, _, _), client(url) as http:
        unknown = await http.post("/v1/completions", json={"prompt": "x", "model": "gpt-5"})
        chat = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                             "model": "gpt-5"})
        known = await http.get("/v1/models/llama-3-8b")
        missing = await http.get("/v1/models/org/gpt-5")
    for answer in (unknown, chat, missing):
        assert answer.status_code == 404
        assert answer.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                             "param": "model", "code": "model_not_found"}
    assert known.status_code == 200 and known.json()["id"] == "llama-3-8b" and known.json()["object"] == "model"


def _until_stop(stop: str, limit: int) -> tuple[str, int]:
    """The synthetic output up to `stop`, and how many tokens it took to see the stop."""
    text = ""
    for n in range(1, limit + 1):
        text += synthetic_token(n - 1)
        if stop in text:
            return text[:text.index(stop)], n
    return text, limit


OUTPUT = "".join(synthetic_token(i) for i in range(30))
STOP = OUTPUT[8:12]  # spans tokens


async def test_a_stop_sequence_ends_the_output_before_it_with_finish_reason_stop():
    expected, tokens = _until_stop(STOP, 30)
    async with running_server() as (url, runtime, _), client(url) as http:
        whole = (await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 30, "stop": STOP})).json()
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 30, "stop": ["never", STOP],
                "stream": True, "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            events = sse_events((await response.aread()).decode())
        with anyio.fail_after(HANG_GUARD_S):
            while runtime.live:
                await anyio.sleep(0.01)
        used = [runtime.scheduler.kv_usage(w).used for w in runtime.scheduler.worker_ids()]
    assert whole["choices"][0]["text"] == expected and whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == tokens
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2] if e["choices"])
    assert streamed == expected and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-3]["choices"][0]["finish_reason"] == "stop" and events[-2]["usage"]["completion_tokens"] == tokens
    assert runtime.counts["finished"] == 2 and runtime.counts["cancelled"] == 0 and used == [0, 0]


async def test_a_stop_sequence_that_never_comes_loses_no_text():
    async with running_server() as (url, _, _), client(url) as http:
        body = {"prompt": "x", "max_tokens": 12, "stop": [OUTPUT[11:13] + "#"], "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            events = sse_events((await response.aread()).decode())
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == OUTPUT[:12]
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_unsupported_fields_are_refused_and_sampling_fields_accepted_through_the_openai_client():
    async with running_server() as (url, _, _):
        ai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="key-alice", max_retries=0)
        try:
            sampled = await ai.completions.create(model="llama-3-8b", prompt="x", max_tokens=3, temperature=0.2,
                                                  top_p=0.9, seed=7, presence_penalty=1, frequency_penalty=-1,
                                                  user="u", extra_body={"top_k": 5, "min_p": 0.1,
                                                                        "repetition_penalty": 1.1})
            with pytest.raises(openai.BadRequestError) as logprobs:
                await ai.completions.create(model="llama-3-8b", prompt="x", max_tokens=3, logprobs=2)
            with pytest.raises(openai.BadRequestError) as tools:
                await ai.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "x"}],
                                                 tools=[{"type": "function", "function": {"name": "f"}}])
            with pytest.raises(openai.BadRequestError) as hot:
                await ai.completions.create(model="llama-3-8b", prompt="x", temperature=3)
            with pytest.raises(openai.NotFoundError) as unknown:
                await ai.models.retrieve("gpt-5")
            model = await ai.models.retrieve("llama-3-8b")
        finally:
            await ai.close()
    assert sampled.choices[0].text == "".join(TOKENS[:3])
    assert [e.value.body["param"] for e in (logprobs, tools, hot)] == ["logprobs", "tools", "temperature"]
    assert logprobs.value.body["code"] == "unsupported_parameter" and unknown.value.body["code"] == "model_not_found"
    assert model.id == "llama-3-8b"


async def test_a_stop_sequence_completed_by_the_last_allowed_token_still_finishes_with_stop():
    expected, tokens = _until_stop(STOP, 30)
    async with running_server() as (url, _, _), client(url) as http:
        whole = (await http.post("/v1/completions", json={"prompt": "x", "max_tokens": tokens, "stop": STOP})).json()
        body = {"prompt": "x", "max_tokens": tokens, "stop": STOP, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            events = sse_events((await response.aread()).decode())
    assert (whole["choices"][0]["text"], whole["choices"][0]["finish_reason"]) == (expected, "stop")
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == expected
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
