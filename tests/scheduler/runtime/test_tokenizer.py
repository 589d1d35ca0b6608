"""The serving tokenizer: one token per UTF-8 byte, special tokens spelled out count one, decoding
inverts encoding, and chats render with the documented template."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.runtime import tokenizer
from scheduler.runtime.tokenizer import BOS, EOS

# Arbitrary unicode, now and then with a special token spelled out in it.
texts = st.lists(st.one_of(st.text(), st.sampled_from([BOS, EOS])), max_size=6).map("".join)


@given(st.text().filter(lambda text: BOS not in text and EOS not in text))
def test_a_text_without_special_tokens_is_its_utf8_bytes(text):
    assert tokenizer.encode(text) == list(text.encode()) and tokenizer.count(text) == len(text.encode())


@given(texts)
def test_count_is_the_length_of_the_encoding_and_decoding_inverts_it(text):
    ids = tokenizer.encode(text)
    assert tokenizer.count(text) == len(ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace(BOS, "").replace(EOS, "")
    assert all(0 <= index < tokenizer.VOCAB_SIZE for index in ids)


@pytest.mark.parametrize("text,ids", [
    ("", []),
    ("hi", [104, 105]),
    ("é", [0xC3, 0xA9]),
    ("🙂", [0xF0, 0x9F, 0x99, 0x82]),
    (f"{BOS}a{EOS}", [256, 97, 257]),
    ("<|begin_of_text|", list(b"<|begin_of_text|")),
])
def test_examples(text, ids):
    assert tokenizer.encode(text) == ids


def test_invalid_utf8_decodes_to_the_replacement_character():
    assert tokenizer.decode([0xE2, 0x82, 65, 0xFF, 256, 0xC3]) == f"\ufffdA\ufffd{BOS}\ufffd"


def test_token_strings_are_gpt2s_byte_symbols():
    assert tokenizer.token_strings(tokenizer.encode(f"a b\n{EOS}")) == ["a", "Ġ", "b", "Ċ", EOS]
    assert len(set(tokenizer.BYTE_SYMBOLS)) == 256 and len(tokenizer.vocabulary()) == tokenizer.VOCAB_SIZE


def test_a_chat_renders_one_line_per_message_then_the_reply_prompt():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]},
                {"role": "assistant", "content": None}]
    assert tokenizer.render_chat(messages) == "system: Be brief.\nuser: hi!\nassistant: \nassistant: "
    assert tokenizer.render_chat(messages[:1], add_generation_prompt=False) == "system: Be brief.\n"
