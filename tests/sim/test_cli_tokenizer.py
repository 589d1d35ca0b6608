"""`fairbatch tokenizer DIR`: writes the folder and lists its files; a bad DIR or a missing extra
fails with one line naming it, and exit code 2."""

from __future__ import annotations

import sys

import pytest

from benchmarks.main import main


def test_the_command_writes_a_folder_the_tokenizers_library_loads(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    folder = tmp_path / "a" / "tok"
    assert main(["tokenizer", str(folder)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(folder / name) for name in ("tokenizer.json", "tokenizer_config.json",
                                                       "special_tokens_map.json")]
    loaded = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert len(loaded.encode("héllo").ids) == 6


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fairbatch: error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_a_file_as_dir_is_named_with_what_is_allowed(tmp_path, capsys):
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["tokenizer", str(path)]) == 2
    err = one_line_error(capsys)
    assert f"fairbatch: error: {path}: is a file, not a folder; allowed: a folder that does not exist" in err


def test_a_missing_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    assert main(["tokenizer", str(tmp_path / "tok")]) == 2
    err = one_line_error(capsys)
    assert "needs the 'tokenizer' extra (the tokenizers package): pip install -e '.[tokenizer]'" in err


def test_dir_is_required(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["tokenizer"])
    assert stop.value.code == 2 and "DIR" in capsys.readouterr().err
