"""The OpenAI wire format: parsing and checking request bodies, building response bodies and
stream chunks. Plain functions on plain data, no I/O.

Prompt tokens are counted by the serving tokenizer (`scheduler.runtime.tokenizer`, which
`fairbatch tokenizer DIR` writes for clients): one token per UTF-8 byte of a text; one per id for
a prompt given as token ids; a chat is rendered by the tokenizer's chat template ("ROLE: CONTENT"
lines, then "assistant: ") and that text counted.

Request fields fall in three sets (the README lists them): those honoured (`model`, `prompt` or
`messages`, `max_tokens` / `max_completion_tokens`, `stream`, `stream_options.include_usage`,
`stop`), sampling fields that cannot change the shape of an answer, checked as vLLM checks them
and otherwise ignored (`SAMPLING`), and fields fairbatch cannot honour, refused naming the field
unless they hold their no-op value (`UNSUPPORTED`). Other fields are ignored, as vLLM ignores them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from scheduler.outcomes import FinishReason
from scheduler.prefix import Prefix

from . import tokenizer

COMPLETION, CHAT = "text_completion", "chat.completion"
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# OpenAI's finish_reason for each way a request finishes (a cancelled one ends in an error instead).
FINISH_REASONS = {FinishReason.EOS: "stop", FinishReason.LENGTH: "length", FinishReason.STOP: "stop"}
MAX_STOP = 4  # stop sequences a request may give, as OpenAI allows

# Fields fairbatch cannot honour, and the values that ask for nothing (accepted).
UNSUPPORTED = {
    "n": (None, 1), "best_of": (None, 1), "echo": (None, False), "suffix": (None, ""),
    "logprobs": (None, False), "top_logprobs": (None,), "logit_bias": (None, {}),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
}
# Sampling fields that cannot change the shape of an answer: checked as vLLM's
# SamplingParams._verify_args checks them (vllm/sampling_params.py: temperature finite in [0, 2],
# top_p in (0, 1], top_k an integer >= -1 (0 or -1: no limit), min_p in [0, 1], presence and
# frequency penalties in [-2, 2], repetition_penalty finite > 0; its protocol takes seed as a
# 64-bit integer), then ignored: simulated workers emit the same tokens whatever they say.
# Each is (low, high, low excluded); null means the default.
SAMPLING = {
    "temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, True), "min_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, False), "frequency_penalty": (-2.0, 2.0, False),
    "repetition_penalty": (0.0, math.inf, True),
}
SEED_RANGE = (-(2**63), 2**63 - 1)


class BadRequest(Exception):
    """A request body the server refuses (HTTP 400), naming the field (`param`) at fault."""

    def __init__(self, param: str | None, message: str, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
        self.status = status  # 404 for an unknown model, as OpenAI and vLLM answer


@dataclass(frozen=True, slots=True)
class Limits:
    model: str  # the one model served
    max_tokens: int  # the largest max_tokens accepted
    default_max_tokens: int = 16  # when a request gives none (OpenAI's default for completions)


@dataclass(frozen=True, slots=True)
class Completion:
    """A checked request: what to submit and how to answer."""

    kind: str  # COMPLETION or CHAT
    model: str
    prompt: str | list[int] | list[dict]
    prompt_tokens: int
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()  # the output ends before the first of these it contains


def prompt_prefix(completion: Completion) -> Prefix:
    """The prompt's content as token ids (the serving tokenizer's, or the client's own ids), so
    that requests sharing a prompt's start share its cached KV blocks."""
    prompt = completion.prompt
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    elif completion.kind == CHAT:
        ids = tokenizer.encode(chat_prompt(prompt))
    else:
        ids = prompt
    return Prefix(tuple(ids))


def count_tokens(text: str) -> int:
    """Tokens of a text under the serving tokenizer: its UTF-8 bytes."""
    return tokenizer.count(text)


# ----- parsing ----------------------------------------------------------------------------------


def parse(body: bytes, kind: str, limits: Limits) -> Completion:
    """Check a /v1/completions (COMPLETION) or /v1/chat/completions (CHAT) body."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BadRequest("body", f"body: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadRequest("body", f"body: must be a JSON object, got {type(data).__name__}")
    model = _model(data, limits)
    if kind == CHAT:
        prompt, tokens = _messages(data.get("messages"))
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        key = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    else:
        prompt, tokens = _prompt(data.get("prompt"))
        max_tokens, key = data.get("max_tokens"), "max_tokens"
    _refuse_unsupported(data)
    _check_sampling(data)
    stream = _boolean(data, "stream")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options", f"stream_options: must be an object, got {options!r}")
    include_usage = _boolean(options or {}, "include_usage", "stream_options.include_usage")
    return Completion(kind, model, prompt, tokens, _max_tokens(max_tokens, key, limits), stream,
                      stream and include_usage, _stop(data.get("stop")))


def _model(data: dict, limits: Limits) -> str:
    model = data.get("model", limits.model)
    if model != limits.model:
        raise model_not_found(model, limits)
    return model


def model_not_found(model: Any, limits: Limits) -> BadRequest:
    return BadRequest("model", f"model: the model {_short(model)} does not exist; this server serves "
                               f"{limits.model!r}", "model_not_found", 404)


def _refuse_unsupported(data: dict) -> None:
    for key, no_ops in UNSUPPORTED.items():
        value = data.get(key)
        if not any(type(value) is type(ok) and value == ok for ok in no_ops):
            raise BadRequest(key, f"{key}: not supported by this server, leave it out; got {_short(value)}",
                             "unsupported_parameter")


def _check_sampling(data: dict) -> None:
    for key, (low, high, open_low) in SAMPLING.items():
        value = data.get(key)
        if value is None:
            continue
        if not _real(value) or not math.isfinite(value) or value < low or value > high or (open_low and value == low):
            allowed = f"> {low:g}" if high == math.inf else f"in {'(' if open_low else '['}{low:g}, {high:g}]"
            raise BadRequest(key, f"{key}: must be a finite number {allowed}, got {_short(value)}")
    _check_integer(data, "top_k", -1, None, "an integer >= -1 (0 or -1: no limit)")
    _check_integer(data, "seed", *SEED_RANGE, "a 64-bit integer")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user", f"user: must be a string, got {_short(user)}")


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_integer(data: dict, key: str, low: int, high: int | None, what: str) -> None:
    value = data.get(key)
    if value is None:
        return
    integer = isinstance(value, int) and not isinstance(value, bool)
    if not integer or value < low or (high is not None and value > high):
        raise BadRequest(key, f"{key}: must be {what}, got {_short(value)}")


def _stop(stop: Any) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return ()
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop", f"stop: must be a non-empty string or a list of up to {MAX_STOP} of them, "
                                 f"got {_short(stop)}")
    return tuple(dict.fromkeys(stops))


def _boolean(data: dict, key: str, name: str | None = None) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(name or key, f"{name or key}: must be true or false, got {value!r}")
    return value


def _max_tokens(value: Any, key: str, limits: Limits) -> int:
    if value is None:
        return min(limits.default_max_tokens, limits.max_tokens)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_tokens:
        raise BadRequest(key, f"{key}: must be an integer from 1 to {limits.max_tokens}, got {value!r}")
    return value


def _prompt(prompt: Any) -> tuple[str | list[int], int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one prompt
    if isinstance(prompt, str) and prompt:
        return prompt, count_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(_token_id(t) for t in prompt):
        return prompt, len(prompt)
    raise BadRequest("prompt", "prompt: required, a non-empty string or list of token ids (integers >= 0); "
                               f"got {_short(prompt)}")


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _messages(messages: Any) -> tuple[list[dict], int]:
    return messages, count_tokens(chat_prompt(messages))


def chat_prompt(messages: Any, add_generation_prompt: bool = True) -> str:
    """The checked `messages` rendered as the prompt text the model reads."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages", f"messages: required, a non-empty list of messages; got {_short(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}]", f"messages[{i}]: must be an object with a role in "
                                               f"{', '.join(ROLES)}; got {_short(message)}")
        _content(message.get("content"), f"messages[{i}].content")
    return tokenizer.render_chat(messages, add_generation_prompt)


def _content(content: Any, key: str) -> str:
    """A message's text: a string, a list of text parts, or null (an assistant's tool call)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content):
        return "".join(p.get("text", "") for p in content)
    raise BadRequest(key, f"{key}: must be a string or a list of text parts, got {_short(content)}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ----- stop sequences ---------------------------------------------------------------------------


class StopText:
    """The generated text as the client sees it under `stop` sequences. `feed(token)` returns what
    may be sent now: text that could begin a stop sequence is held back until it cannot, and once
    a stop sequence appears the text ends before it (`stopped`). `tokens` counts the tokens fed."""

    __slots__ = ("stop", "longest", "text", "sent", "tokens", "stopped")

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self.stop = stop
        self.longest = max(map(len, stop), default=0)
        self.text = ""
        self.sent = 0  # characters of `text` given out
        self.tokens = 0
        self.stopped = False

    def feed(self, token: str) -> str:
        if self.stopped:
            return ""
        self.tokens += 1
        if not self.stop:
            return token
        start = max(0, len(self.text) - self.longest + 1)  # a new match ends inside this token
        self.text += token
        hits = [at for at in (self.text.find(s, start) for s in self.stop) if at >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            return self.flush()
        return self._release(len(self.text) - self._held())

    def flush(self) -> str:
        """What is still held back (at the end of the output)."""
        return self._release(len(self.text))

    def _held(self) -> int:
        """The length of the longest end of the text that begins a stop sequence."""
        for size in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0

    def _release(self, end: int) -> str:
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece


# ----- responses --------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(finish: FinishReason | str) -> str:
    """The OpenAI finish_reason of why a request ended."""
    return FINISH_REASONS.get(finish, str(finish))


def response(request: Completion, rid: str, created: int, text: str, finish: FinishReason | str,
             tokens: int) -> dict:
    """The whole answer of a non-streaming request."""
    if request.kind == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason(finish)}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(finish)}
    return {"id": rid, "object": request.kind, "created": created, "model": request.model, "choices": [choice],
            "usage": usage(request.prompt_tokens, tokens)}


def chunk(request: Completion, rid: str, created: int, text: str | None, finish: FinishReason | str | None = None,
          first: bool = False) -> dict:
    """One stream event: a token (`text`), or the last event with its finish reason."""
    reason = None if finish is None else finish_reason(finish)
    if request.kind == CHAT:
        delta = {"role": "assistant", "content": text or ""} if first else {} if text is None else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        kind = COMPLETION
    return {"id": rid, "object": kind, "created": created, "model": request.model, "choices": [choice]}


def usage_chunk(request: Completion, rid: str, created: int, tokens: int) -> dict:
    """The stream's last event when stream_options.include_usage is set (no choices)."""
    kind = "chat.completion.chunk" if request.kind == CHAT else COMPLETION
    return {"id": rid, "object": kind, "created": created, "model": request.model, "choices": [],
            "usage": usage(request.prompt_tokens, tokens)}


class TokenEvents:
    """The server-sent events of one stream's tokens, byte for byte what `sse(chunk(...))` writes,
    from the chunk's JSON around its text, encoded once per stream: a token then costs the encoding
    of its text, not a dict and a json.dumps of it (with hundreds of streams, a step's tokens are
    most of a serving process's work). A chat stream's first event names the role, so it is built
    whole."""

    __slots__ = ("request", "rid", "created", "head", "tail")

    def __init__(self, request: Completion, rid: str, created: int) -> None:
        self.request, self.rid, self.created = request, rid, created
        placeholder = json.dumps("text")
        # The text is the last string of a token event (only nulls follow it), whatever the id or model.
        head, _, tail = sse(chunk(request, rid, created, "text")).decode().rpartition(placeholder)
        self.head, self.tail = head.encode(), tail.encode()

    def encode(self, texts: list[str], first: bool = False) -> bytes:
        """The events of `texts`, one per text, in one piece of bytes to write; `first`: the
        stream's first event is among them."""
        events = [self.head + json.dumps(text).encode() + self.tail for text in texts]
        if first and texts and self.request.kind == CHAT:
            events[0] = sse(chunk(self.request, self.rid, self.created, texts[0], first=True))
        return b"".join(events)


def error(message: str, kind: str, code: str, param: str | None = None, **extra: Any) -> dict:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
