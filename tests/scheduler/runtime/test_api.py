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


TEXTS = ["a", "", "text", '"', "\\", "\n", "é", "😀", "two words", '"text"']


@pytest.mark.parametrize("kind", [api.COMPLETION, api.CHAT])
@pytest.mark.parametrize("model,rid", [("llama-3-8b", "cmpl-0f"), ('text "text"', "text")])
def test_token_events_are_the_bytes_of_each_tokens_chunk_one_event_per_token(kind, model, rid):
    request = api.Completion(kind, model, "hi", 2, 16, stream=True)
    events = api.TokenEvents(request, rid, 7)
    per_token = [api.sse(api.chunk(request, rid, 7, text, first=i == 0)) for i, text in enumerate(TEXTS)]
    assert events.encode(TEXTS, first=True) == b"".join(per_token)
    assert events.encode(TEXTS[1:]) == b"".join(api.sse(api.chunk(request, rid, 7, t)) for t in TEXTS[1:])
    assert events.encode([]) == b""


def test_an_unknown_model_is_a_404_model_not_found():
    with pytest.raises(api.BadRequest) as err:
        parse({"prompt": "x", "model": "gpt-5"})
    assert (err.value.status, err.value.code, err.value.param) == (404, "model_not_found", "model")
    assert "'gpt-5' does not exist" in err.value.message and "'llama-3-8b'" in err.value.message


@pytest.mark.parametrize("kind", [api.COMPLETION, api.CHAT])
@pytest.mark.parametrize("field,value", [
    ("logprobs", 1), ("logprobs", 0), ("logprobs", True), ("top_logprobs", 2), ("top_logprobs", 0),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "auto"),
    ("functions", [{"name": "f"}]), ("function_call", "auto"), ("response_format", {"type": "json_object"}),
    ("n", 2), ("n", True), ("echo", True), ("best_of", 3), ("logit_bias", {"42": 5}), ("suffix", "end"),
])
def test_fields_fairbatch_cannot_honour_are_refused_naming_the_field(kind, field, value):
    body = {"messages": [{"role": "user", "content": "hi"}]} if kind == api.CHAT else {"prompt": "hi"}
    with pytest.raises(api.BadRequest) as err:
        parse({**body, field: value}, kind)
    assert (err.value.param, err.value.code, err.value.status) == (field, "unsupported_parameter", 400)
    assert err.value.message.startswith(f"{field}: not supported")


def test_their_no_op_values_are_accepted():
    no_ops = {"logprobs": False, "top_logprobs": None, "tools": [], "tool_choice": "none", "functions": [],
              "function_call": "none", "response_format": {"type": "text"}, "n": 1, "echo": False, "best_of": 1,
              "logit_bias": {}, "suffix": ""}
    assert parse({"prompt": "hi", **no_ops}).prompt_tokens == 2
    assert parse({"prompt": "hi", **{key: None for key in no_ops}}).max_tokens == 64


GOOD_SAMPLING = {"temperature": 0, "top_p": 1, "top_k": -1, "min_p": 0, "seed": -(2**63), "user": "u-1",
                 "presence_penalty": -2, "frequency_penalty": 2, "repetition_penalty": 1.3}


@pytest.mark.parametrize("overrides", [{}, {"temperature": 2.0, "top_p": 0.01, "top_k": 0, "min_p": 1.0,
                                            "seed": 2**63 - 1, "repetition_penalty": 0.01},
                                       {"top_k": 50, "temperature": 0.7}, {key: None for key in GOOD_SAMPLING}])
def test_sampling_fields_are_checked_then_ignored(overrides):
    fields = {**GOOD_SAMPLING, **overrides}
    chat = {"messages": [{"role": "user", "content": "a"}]}
    for kind, body in ((api.COMPLETION, {"prompt": "hi"}), (api.CHAT, chat)):
        request = parse({**body, **fields, "max_tokens": 3}, kind)
        assert request.max_tokens == 3 and request.stop == ()


@pytest.mark.parametrize("field,value,allowed", [
    ("temperature", -0.1, "[0, 2]"), ("temperature", 2.5, "[0, 2]"), ("temperature", "hot", "[0, 2]"),
    ("temperature", True, "[0, 2]"), ("top_p", 0, "(0, 1]"), ("top_p", 1.01, "(0, 1]"), ("min_p", -0.5, "[0, 1]"),
    ("min_p", 1.5, "[0, 1]"), ("presence_penalty", 2.5, "[-2, 2]"), ("frequency_penalty", -3, "[-2, 2]"),
    ("repetition_penalty", 0, "> 0"), ("repetition_penalty", -1, "> 0"), ("top_k", -2, "integer >= -1"),
    ("top_k", 2.5, "integer >= -1"), ("top_k", False, "integer >= -1"), ("seed", 2**63, "64-bit integer"),
    ("seed", "7", "64-bit integer"), ("seed", 1.0, "64-bit integer"), ("user", 5, "a string"),
])
def test_bad_sampling_fields_name_the_field_and_the_allowed_range(field, value, allowed):
    with pytest.raises(api.BadRequest) as err:
        parse({"prompt": "hi", field: value})
    assert err.value.param == field and err.value.message.startswith(f"{field}: must be")
    assert allowed in err.value.message


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_sampling_numbers_are_refused(value):
    for field in ("temperature", "repetition_penalty"):
        with pytest.raises(api.BadRequest) as err:
            parse(f'{{"prompt": "hi", "{field}": {value}}}'.encode())
        assert err.value.param == field and "finite" in err.value.message


@pytest.mark.parametrize("stop,expected", [(None, ()), ([], ()), ("\n", ("\n",)), (["a", "bc", "a"], ("a", "bc")),
                                           (["w", "x", "y", "z"], ("w", "x", "y", "z"))])
def test_stop_is_a_string_or_up_to_four(stop, expected):
    assert parse({"prompt": "hi", "stop": stop}).stop == expected


@pytest.mark.parametrize("stop", ["", ["a", ""], ["a", "b", "c", "d", "e"], [1], {"a": 1}, 3])
def test_bad_stop_values_are_refused(stop):
    with pytest.raises(api.BadRequest) as err:
        parse({"prompt": "hi", "stop": stop})
    assert err.value.param == "stop" and "up to 4" in err.value.message


def _fed(stop, tokens):
    text = api.StopText(stop)
    pieces = [text.feed(token) for token in tokens]
    return pieces, text


def test_stop_text_ends_before_a_stop_sequence_that_spans_tokens():
    pieces, text = _fed(("m ip",), [" lorem", " ipsum", " dolor"])
    assert pieces == [" lore", "", ""] and text.stopped and text.tokens == 2 and text.flush() == ""


def test_stop_text_holds_back_only_what_could_begin_a_stop_sequence():
    pieces, text = _fed(("xyz", "ab"), ["1a", "c", "2x", "y", "w"])
    assert pieces == ["1", "ac", "2", "", "xyw"] and not text.stopped
    assert _fed(("xyz",), ["ab", "xy"])[1].flush() == "xy"  # held at the end, given out by flush


def test_stop_text_picks_the_earliest_stop_sequence_and_passes_tokens_through_without_any():
    pieces, text = _fed(("cd", "b"), ["abcd"])
    assert pieces == ["a"] and text.stopped
    pieces, text = _fed((), ["x", "", "y"])
    assert pieces == ["x", "", "y"] and text.tokens == 3 and not text.stopped


def test_a_prompts_content_is_its_token_ids_covering_exactly_its_tokens():
    text = parse({"prompt": "Say hello"})
    assert api.prompt_prefix(text).ids == tuple(b"Say hello")
    ids = parse({"prompt": [5, 6, 7]})
    assert api.prompt_prefix(ids).ids == (5, 6, 7)
    chat = parse({"messages": [{"role": "user", "content": "hi"}]}, api.CHAT)
    assert api.prompt_prefix(chat).ids == tuple(b"user: hi\nassistant: ")
    for request in (text, ids, chat):
        api.prompt_prefix(request).check(request.prompt_tokens)  # one id per token counted
