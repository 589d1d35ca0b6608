"""vLLM's /tokenize and /detokenize: the bodies, the answers (checked against the completions'
usage over real HTTP), and the refusals, which name the field."""

from __future__ import annotations

import json

import pytest
from server_helpers import client, running_server

from scheduler.runtime import api, tokenization, tokenizer

LIMITS = api.Limits("llama-3-8b", max_tokens=1000)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo"}]


def tokenize(body) -> dict:
    return tokenization.tokenize(json.dumps(body).encode(), LIMITS, 2048)


def test_a_prompt_is_counted_byte_by_byte():
    answer = tokenize({"model": "llama-3-8b", "prompt": "héllo"})
    assert answer == {"count": 6, "max_model_len": 2048, "tokens": list("héllo".encode()), "token_strs": None}
    assert tokenize({"prompt": "a b", "return_token_strs": True})["token_strs"] == ["a", "Ġ", "b"]
    assert tokenize({"prompt": "a", "add_special_tokens": False})["tokens"] == [97]


def test_a_chat_is_rendered_by_the_template_then_counted():
    assert tokenize({"messages": CHAT})["tokens"] == tokenizer.encode(tokenizer.render_chat(CHAT))
    without = tokenize({"messages": CHAT, "add_generation_prompt": False})
    assert without["tokens"] == tokenizer.encode("system: Be brief.\nuser: héllo\n")


def test_detokenize_inverts_tokenize():
    ids = tokenize({"prompt": "héllo <|end_of_text|>"})["tokens"]
    assert tokenization.detokenize(json.dumps({"tokens": ids}).encode(), LIMITS) == {"prompt": "héllo <|end_of_text|>"}


@pytest.mark.parametrize("body,param", [
    (b"{", "body"),
    (b"[]", "body"),
    (b'{"prompt": 5}', "prompt"),
    (b"{}", "prompt"),
    (b'{"prompt": "x", "model": "gpt-4"}', "model"),
    (b'{"prompt": "x", "add_special_tokens": "yes"}', "add_special_tokens"),
    (b'{"prompt": "x", "return_token_strs": 1}', "return_token_strs"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": [{"role": "wizard"}]}', "messages[0]"),
    (b'{"messages": [{"role": "user", "content": "x"}], "continue_final_message": true}', "continue_final_message"),
])
def test_bad_tokenize_bodies_name_the_field(body, param):
    with pytest.raises(api.BadRequest) as err:
        tokenization.tokenize(body, LIMITS, 2048)
    assert err.value.param == param and err.value.message.startswith(param)


@pytest.mark.parametrize("body", [b"{}", b'{"tokens": [1, 258]}', b'{"tokens": [-1]}', b'{"tokens": [true]}',
                                  b'{"tokens": "abc"}'])
def test_bad_detokenize_bodies_name_tokens(body):
    with pytest.raises(api.BadRequest, match=r"^tokens: required, a list of token ids from 0 to 257"):
        tokenization.detokenize(body, LIMITS)


@pytest.mark.anyio
async def test_the_routes_count_what_completions_report_in_usage():
    prompt = "Say héllo 🙂"
    async with running_server() as (url, runtime, _), client(url) as http:
        counted = (await http.post("/tokenize", json={"model": "llama-3-8b", "prompt": prompt})).json()
        chat = (await http.post("/tokenize", json={"messages": CHAT})).json()
        completion = (await http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 7})).json()
        replied = (await http.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 3})).json()
        text = (await http.post("/detokenize", json={"tokens": counted["tokens"]})).json()
    assert counted["count"] == completion["usage"]["prompt_tokens"] == len(prompt.encode())
    assert counted["max_model_len"] == runtime.scheduler.max_sequence_tokens > 0
    assert chat["count"] == replied["usage"]["prompt_tokens"]
    assert tokenizer.count(completion["choices"][0]["text"]) == completion["usage"]["completion_tokens"] == 7
    assert text == {"prompt": prompt}


@pytest.mark.anyio
async def test_the_routes_need_a_tenants_key_and_refuse_bad_bodies():
    async with running_server() as (url, _, _):
        async with client(url, key=None) as anonymous:
            missing = await anonymous.post("/tokenize", json={"prompt": "x"})
        async with client(url) as http:
            bad = await http.post("/detokenize", json={"tokens": [999]})
            unknown = await http.post("/tokenize", json={"model": "gpt-4", "prompt": "x"})
            too_big = await http.post("/tokenize", content=b'{"prompt": "' + b"x" * 9000 + b'"}')
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "body_too_large"
