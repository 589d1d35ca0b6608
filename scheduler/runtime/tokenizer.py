"""The tokenizer `fairbatch serve` counts with: byte-level, one token per UTF-8 byte.

Token ids 0 to 255 are the bytes of a text's UTF-8 encoding; 256 and 257 are the special tokens
BOS and EOS. Encoding never adds them; a text that spells one out literally encodes it as its
one id, as Hugging Face tokenizers do with their special tokens. Decoding joins the bytes back
(an invalid UTF-8 sequence decodes to U+FFFD, as Hugging Face's byte-level decoder does).

The same rules, written by `fairbatch tokenizer DIR` as a Hugging Face tokenizer folder
(`scheduler.runtime.tokenizer_folder`), let load generators (`vllm bench serve`, aiperf,
guidellm) count tokens offline exactly as the server does: a byte-level BPE with no merges over
GPT-2's byte-to-symbol table, so `tokenize()` shows the same token strings.

A chat is rendered to text before it is counted, with a plain-text template (CHAT_TEMPLATE, the
same in Jinja in the folder's tokenizer_config.json): one line "ROLE: CONTENT" per message, then
"assistant: " when a reply is asked for. Pure Python, no dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
SPECIAL_TOKENS = {BOS: 256, EOS: 257}
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
REPLY_PROMPT = "assistant: "
_SPECIAL = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
_SPECIAL_IDS = {index: token for token, index in SPECIAL_TOKENS.items()}

# transformers' apply_chat_template renders this exactly as render_chat() does.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- message['role'] + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- elif message['content'] is not none -%}"
    "{%- for part in message['content'] -%}{{- part.get('text', '') -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + REPLY_PROMPT + "' -}}{%- endif -%}"
)


def encode(text: str) -> list[int]:
    """The token ids of `text`: its UTF-8 bytes, a special token's spelling as its one id."""
    ids: list[int] = []
    start = 0
    for match in _SPECIAL.finditer(text):
        ids += text[start:match.start()].encode()
        ids.append(SPECIAL_TOKENS[match.group()])
        start = match.end()
    ids += text[start:].encode()
    return ids


def count(text: str) -> int:
    """len(encode(text)), without building the list."""
    specials = _SPECIAL.findall(text)
    if not specials:
        return len(text.encode())
    return len(text.encode()) - sum(len(token) for token in specials) + len(specials)


def decode(ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    """The text of token ids (each in range(VOCAB_SIZE)). Skipped special tokens leave no
    boundary: the bytes around them decode together, as Hugging Face's decoder has it."""
    if skip_special_tokens:
        ids = [index for index in ids if index < 256]
    parts: list[str] = []
    run = bytearray()
    for index in ids:
        if index < 256:
            run.append(index)
            continue
        parts += [run.decode(errors="replace"), _SPECIAL_IDS[index]]
        run.clear()
    parts.append(run.decode(errors="replace"))
    return "".join(parts)


def _byte_symbols() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte (bytes_to_unicode): printable Latin-1 bytes stand
    for themselves, the others map to code points from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 256
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte], extra = chr(extra), extra + 1
    return tuple(symbols[byte] for byte in range(256))


BYTE_SYMBOLS = _byte_symbols()


def token_strings(ids: Iterable[int]) -> list[str]:
    """Each id's string in the vocabulary (Hugging Face's convert_ids_to_tokens): " " is "Ġ"."""
    return [BYTE_SYMBOLS[index] if index < 256 else _SPECIAL_IDS[index] for index in ids]


def vocabulary() -> dict[str, int]:
    """Every token's string and id, special tokens included."""
    return {**{symbol: byte for byte, symbol in enumerate(BYTE_SYMBOLS)}, **SPECIAL_TOKENS}


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """A chat as the text the model would read (CHAT_TEMPLATE). A message's content is a string, a
    list of parts whose `text` is joined, or None."""
    lines = [f"{message['role']}: {_text(message.get('content'))}\n" for message in messages]
    return "".join(lines) + (REPLY_PROMPT if add_generation_prompt else "")


def _text(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content)
