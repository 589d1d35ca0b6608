"""The OpenAI wire format: request checks name the field, token counting follows the stated rule."""

from __future__ import annotations

import json

import pytest

from scheduler.runtime import api

LIMITS = api.Limits("llama-3-8b", max_tokens=1000, default_max_tokens=64)


def parse(body, kind=api.COMPLETION):
    return api.parse(json.dumps(body).encode() if not isinstance(body, bytes) else body, kind, LIMITS)


@pytest.mark.parametrize("text,tokens", [("", 0), ("a", 1), ("abcd", 4), ("é🙂", 6), ("x" * 400, 400)])
def test_a_text_counts_a_token_per_utf8_byte(text, tokens):
    assert api.count_tokens(text) == tokens


def test_a_completion_request_is_read_with_defaults():
    request = parse({"model": "llama-3-8b", "prompt": "Say hello to the world"})
    assert (request.prompt_tokens, request.max_tokens, request.stream, request.include_usage) == (22, 64, False, False)
    assert parse({"prompt": [1, 2, 3], "max_tokens": 7, "stream": True}).prompt_tokens == 3
    assert parse({"prompt": ["one prompt"], "stream": True, "stream_options": {"include_usage": True}}).include_usage


def test_a_chat_counts_the_text_its_template_renders():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    request = parse({"messages": messages, "max_completion_tokens": 5}, api.CHAT)
    assert request.prompt_tokens == len("system: Be brief.\nuser: hi\nassistant: ") and request.max_tokens == 5


@pytest.mark.parametrize("body,param", [
    (b"{not json", "body"),
    (b"\xff\xfe", "body"),
    (b"[" * 100_000, "body"),
    ([1, 2], "body"),
    ({"prompt": "x", "model": "gpt-4"}, "model"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, -2]}, "prompt"),
    ({"prompt": [1, True]}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**12}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stream_options": []}, "stream_options"),
    ({"prompt": "x", "stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"prompt": "x", "n": 3}, "n"),
])
def test_bad_completion_requests_name_the_field(body, param):
    with pytest.raises(api.BadRequest) as err:
        parse(body)
    assert err.value.param == param and err.value.message.startswith(param)


def test_the_max_tokens_error_states_the_allowed_range():
    with pytest.raises(api.BadRequest, match="from 1 to 1000, got -5"):
        parse({"prompt": "x", "max_tokens": -5})


@pytest.mark.parametrize("body,param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 0}, "max_completion_tokens"),
])
def test_bad_chat_requests_name_the_field(body, param):
    with pytest.raises(api.BadRequest) as err:
        parse(body, api.CHAT)
    assert err.value.param == param


def test_responses_and_chunks_have_openais_shape():
    completion = parse({"prompt": "abcdefgh", "max_tokens": 3})
    body = api.response(completion, "cmpl-1", 100, "a b c", "length", 3)
    assert body["choices"][0] == {"index": 0, "text": "a b c", "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
    chat = parse({"messages": [{"role": "user", "content": "hi"}]}, api.CHAT)
    assert api.response(chat, "c", 1, "yo", "eos", 1)["choices"][0]["message"] == {"role": "assistant", "content": "yo"}
    assert api.chunk(chat, "c", 1, " yo", first=True)["choices"][0]["delta"] == {"role": "assistant", "content": " yo"}
    assert api.chunk(chat, "c", 1, None, "eos")["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                                                  "finish_reason": "stop"}
    assert api.sse("[DONE]") == b"data: [DONE]\n\n"
