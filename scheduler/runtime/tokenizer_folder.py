"""`fairbatch tokenizer DIR`: the serving tokenizer (`scheduler.runtime.tokenizer`) written as a
Hugging Face tokenizer folder, so load generators that load a tokenizer with transformers'
`AutoTokenizer.from_pretrained(DIR)` (`vllm bench serve --tokenizer DIR`, `aiperf --tokenizer DIR`,
guidellm) count tokens offline exactly as `fairbatch serve` does.

The folder holds tokenizer.json (a byte-level BPE without merges: one token per UTF-8 byte, plus
the special tokens BOS and EOS, which encoding never adds), tokenizer_config.json (the chat
template, no BOS or EOS added, no clean-up of spaces on decoding) and special_tokens_map.json.
Building tokenizer.json needs the `tokenizers` package (the `tokenizer` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.errors import ConfigError

from . import tokenizer

ALLOWED = "a folder that does not exist yet, or an existing folder (its tokenizer files are replaced)"
MODEL_MAX_LENGTH = 1 << 20  # no limit of the tokenizer's own: the server's max_model_len applies
SPECIAL_TOKENS_MAP = {"bos_token": tokenizer.BOS, "eos_token": tokenizer.EOS, "pad_token": tokenizer.EOS}


def tokenizer_json() -> str:
    """tokenizer.json, built with the `tokenizers` package."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise ConfigError("tokenizer: needs the 'tokenizer' extra (the tokenizers package): "
                          "pip install -e '.[tokenizer]'") from None
    built = Tokenizer(models.BPE(vocab=dict(zip(tokenizer.BYTE_SYMBOLS, range(256))), merges=[]))
    built.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    built.decoder = decoders.ByteLevel()
    built.add_special_tokens([AddedToken(token, special=True, normalized=False)
                              for token in tokenizer.SPECIAL_TOKENS])
    return built.to_str(pretty=True)


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS_MAP,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "chat_template": tokenizer.CHAT_TEMPLATE,
    }


def folder_files() -> dict[str, str]:
    """Each file of the folder and its text."""
    def dump(document: dict) -> str:
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    return {"tokenizer.json": tokenizer_json(), "tokenizer_config.json": dump(tokenizer_config()),
            "special_tokens_map.json": dump(SPECIAL_TOKENS_MAP)}


def write(folder: str | Path) -> list[Path]:
    """Write the folder (created with its parents if need be); the paths written. A path that
    cannot be a folder, or that cannot be written, is a ConfigError naming it."""
    folder = Path(folder)
    files = folder_files()  # first, so a missing extra leaves nothing behind
    _make(folder)
    written = []
    for name, text in files.items():
        path = folder / name
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{folder}: cannot write {name} ({err.strerror or err}); allowed: {ALLOWED}") from None
        written.append(path)
    return written


def _make(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a folder; allowed: {ALLOWED}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{folder}: a part of the path is a file; allowed: {ALLOWED}") from None
    except OSError as err:
        raise ConfigError(f"{folder}: cannot create the folder ({err.strerror or err}); allowed: {ALLOWED}") from None
