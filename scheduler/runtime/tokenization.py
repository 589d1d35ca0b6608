"""vLLM's /tokenize and /detokenize: checking their bodies and building their answers with the
serving tokenizer (`scheduler.runtime.tokenizer`). Plain functions on plain data, no I/O.

The shapes follow vLLM's OpenAI-compatible server (vllm/entrypoints/openai/protocol.py:
TokenizeCompletionRequest, TokenizeChatRequest, TokenizeResponse, DetokenizeRequest,
DetokenizeResponse; served by vllm/entrypoints/openai/serving_tokenization.py):

    POST /tokenize    {"model"?, "prompt": str, "add_special_tokens": true, "return_token_strs": false}
                   or {"model"?, "messages": [...], "add_generation_prompt": true,
                       "continue_final_message": false, "add_special_tokens": false, "return_token_strs": false}
                   -> {"count", "max_model_len", "tokens", "token_strs"}   (token_strs null unless asked)
    POST /detokenize  {"model"?, "tokens": [int]} -> {"prompt": str}

The serving tokenizer adds no special tokens, so `add_special_tokens` changes nothing;
`continue_final_message` is refused. `max_model_len` is the longest sequence (prompt +
max_tokens) every worker can hold.
"""

from __future__ import annotations

import json
from typing import Any

from . import api, tokenizer


def tokenize(body: bytes, limits: api.Limits, max_model_len: int) -> dict:
    """The answer to a /tokenize body (raises api.BadRequest naming the field)."""
    data = _request(body, limits)
    if "messages" in data:  # vLLM reads a body with messages as a chat
        if _flag(data, "continue_final_message", False):
            raise api.BadRequest("continue_final_message", "continue_final_message: not supported by this "
                                 "server, leave it out; got True", "unsupported_parameter")
        text = api.chat_prompt(data["messages"], _flag(data, "add_generation_prompt", True))
    else:
        text = data.get("prompt")
        if not isinstance(text, str):
            raise api.BadRequest("prompt", f"prompt: required, a string (or give messages); got {_short(text)}")
    _flag(data, "add_special_tokens", True)
    ids = tokenizer.encode(text)
    strings = tokenizer.token_strings(ids) if _flag(data, "return_token_strs", False) else None
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": strings}


def detokenize(body: bytes, limits: api.Limits) -> dict:
    """The answer to a /detokenize body (raises api.BadRequest naming the field)."""
    ids = _request(body, limits).get("tokens")
    if not isinstance(ids, list) or not all(_token_id(index) for index in ids):
        raise api.BadRequest("tokens", f"tokens: required, a list of token ids from 0 to {tokenizer.VOCAB_SIZE - 1}; "
                                       f"got {_short(ids)}")
    return {"prompt": tokenizer.decode(ids)}


def _request(body: bytes, limits: api.Limits) -> dict:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise api.BadRequest("body", f"body: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise api.BadRequest("body", f"body: must be a JSON object, got {type(data).__name__}")
    model = data.get("model")
    if model is not None and model != limits.model:
        raise api.model_not_found(model, limits)
    return data


def _flag(data: dict, key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise api.BadRequest(key, f"{key}: must be true or false, got {_short(value)}")
    return value


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < tokenizer.VOCAB_SIZE


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
