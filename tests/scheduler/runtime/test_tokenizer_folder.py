"""The Hugging Face tokenizer folder: the `tokenizers` library and transformers' AutoTokenizer,
loading it, count and decode exactly as the serving tokenizer does; bad folders are named."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.runtime import tokenizer, tokenizer_folder
from scheduler.runtime.tokenizer import BOS, EOS

texts = st.lists(st.one_of(st.text(), st.sampled_from([BOS, EOS])), max_size=6).map("".join)
contents = st.one_of(st.none(), st.text(), st.lists(st.builds(lambda t: {"type": "text", "text": t}, st.text()),
                                                    max_size=3))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                           "content": contents}), min_size=1, max_size=4)


@cache
def folder() -> Path:
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="fairbatch-tokenizer-"))
    tokenizer_folder.write(path)
    return path


@cache
def hf_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder() / "tokenizer.json"))


@cache
def auto_tokenizer():
    pytest.importorskip("transformers", reason="transformers is not installed: pip install -e '.[test]'")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder()))


def test_the_folder_holds_the_tokenizer_its_config_and_special_tokens():
    assert sorted(p.name for p in folder().iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                        "tokenizer_config.json"]
    config = json.loads((folder() / "tokenizer_config.json").read_text())
    assert config["chat_template"] == tokenizer.CHAT_TEMPLATE and config["eos_token"] == EOS
    assert hf_tokenizer().get_vocab() == tokenizer.vocabulary()


@given(texts)
def test_the_tokenizers_library_encodes_and_decodes_as_the_server_does(text):
    encoding = hf_tokenizer().encode(text)
    assert encoding.ids == tokenizer.encode(text) and len(encoding.ids) == tokenizer.count(text)
    assert encoding.tokens == tokenizer.token_strings(encoding.ids)
    assert hf_tokenizer().decode(encoding.ids, skip_special_tokens=False) == text


@given(st.lists(st.integers(0, tokenizer.VOCAB_SIZE - 1), max_size=12), st.booleans())
def test_any_ids_decode_alike_invalid_utf8_included(ids, skip):
    assert hf_tokenizer().decode(ids, skip_special_tokens=skip) == tokenizer.decode(ids, skip)


@given(texts)
def test_auto_tokenizer_counts_as_the_server_does(text):
    auto = auto_tokenizer()
    assert auto.encode(text) == tokenizer.encode(text)  # add_special_tokens=True adds nothing
    assert len(auto(text, add_special_tokens=False)["input_ids"]) == tokenizer.count(text)
    assert auto.decode(auto.encode(text)) == text


@given(messages, st.booleans())
def test_the_chat_template_renders_as_the_server_does(chat, add_generation_prompt):
    auto = auto_tokenizer()
    pytest.importorskip("jinja2", reason="transformers' chat templates need jinja2: pip install -e '.[test]'")
    rendered = auto.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert rendered == tokenizer.render_chat(chat, add_generation_prompt)


def test_auto_tokenizer_knows_the_special_tokens_and_vocabulary():
    auto = auto_tokenizer()
    assert (auto.bos_token, auto.eos_token, auto.eos_token_id) == (BOS, EOS, tokenizer.SPECIAL_TOKENS[EOS])
    assert auto.vocab_size == 256 and len(auto) == tokenizer.VOCAB_SIZE


# ----- bad folders ------------------------------------------------------------------------------


def test_a_file_is_not_a_folder(tmp_path):
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"f: is a file, not a folder; allowed: a folder that does not exist"):
        tokenizer_folder.write(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"f/sub: a part of the path is a file; allowed: "):
        tokenizer_folder.write(tmp_path / "f" / "sub")


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ConfigError, match=r"new: cannot create the folder \(Permission denied\); allowed: "):
        tokenizer_folder.write(tmp_path / "new")
    monkeypatch.undo()
    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(ConfigError, match=r": cannot write tokenizer.json \(Permission denied\); allowed: "):
        tokenizer_folder.write(tmp_path)


def test_an_existing_folder_keeps_its_other_files(tmp_path):
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "tokenizer.json").write_text("old")
    tokenizer_folder.write(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "tokenizer.json").read_text() != "old"


def test_without_the_extra_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tokenizer\]'"):
        tokenizer_folder.write(tmp_path / "new")
    assert not (tmp_path / "new").exists()
