"""The compiled build's bookkeeping: what it built, what is stale, removing it, and a named error
without mypyc. (Building it and running the whole suite on it is CI's, `.ci/run`.)"""

import os
from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from sim import compiled


def fake_checkout(root):
    for module in compiled.MODULES:
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).write_text("# source\n")
    return root


def fake_build(root, modules=compiled.MODULES):
    for module in modules:
        source = root / module
        (source.parent / f"{source.stem}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    (root / "0123abcd__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")


def test_built_lists_each_compiled_module_and_their_shared_library(tmp_path):
    root = fake_checkout(tmp_path)
    assert compiled.built(root) == []
    fake_build(root)
    names = sorted(path.name.split(".")[0] for path in compiled.built(root))
    assert len(names) == len(compiled.MODULES) + 1 and "0123abcd__mypyc" in names


def test_clean_removes_the_build_and_nothing_else(tmp_path):
    root = fake_checkout(tmp_path)
    fake_build(root)
    (root / "build").mkdir()
    assert len(compiled.clean(root)) == len(compiled.MODULES) + 1
    assert compiled.built(root) == [] and not (root / "build").exists()
    assert all((root / module).is_file() for module in compiled.MODULES)


def test_a_source_edited_after_its_build_is_stale(tmp_path):
    root = fake_checkout(tmp_path)
    fake_build(root)
    assert compiled.stale(root) == []
    edited = root / compiled.MODULES[0]
    later = os.stat(edited).st_mtime + 10
    os.utime(edited, (later, later))
    assert compiled.stale(root) == [compiled.MODULES[0]]


def test_without_mypyc_compile_names_the_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"mypyc is not installed; pip install -e '\.\[compile\]'"):
        compiled.build(tmp_path)


def test_the_modules_exist_and_those_with_a_build_are_the_ones_imported_compiled():
    # pure Python in the default test run, every module compiled in CI's compiled stage
    assert all((compiled.ROOT / module).is_file() for module in compiled.MODULES)
    with_build = [module.removesuffix(".py").replace("/", ".") for module in compiled.MODULES
                  if any((compiled.ROOT / module).parent.glob(f"{Path(module).stem}.*.so"))]
    assert compiled.compiled_modules() == with_build
