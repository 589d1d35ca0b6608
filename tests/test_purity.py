"""The core is sans-IO: no module under scheduler/ (runtime/ excepted) imports a clock, randomness,
concurrency or I/O. Checked on the source with `ast`, so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import pytest

SCHEDULER = Path(__file__).resolve().parents[1] / "scheduler"
FORBIDDEN = frozenset({"time", "random", "anyio", "asyncio", "trio", "socket", "os", "threading"})


def forbidden_imports(source: str, filename: str) -> list[str]:
    """'file:line imports module' for every absolute import of a forbidden top-level module."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [f"{filename}:{node.lineno} imports {m}" for m in modules if m.split(".")[0] in FORBIDDEN]
    return found


def core_files() -> list[Path]:
    runtime = SCHEDULER / "runtime"
    return sorted(p for p in SCHEDULER.rglob("*.py") if runtime not in p.parents)


def test_the_core_imports_no_clock_randomness_concurrency_or_io():
    files = core_files()
    assert len(files) >= 10 and SCHEDULER / "policies" / "vtc.py" in files
    offenders = [
        hit for path in files
        for hit in forbidden_imports(path.read_text(), str(path.relative_to(SCHEDULER.parent)))
    ]
    assert not offenders, "the sans-IO core must not import these:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source,hit",
    [
        ("import os", "x.py:1 imports os"),
        ("import json\nimport os.path as p", "x.py:2 imports os.path"),
        ("from time import monotonic", "x.py:1 imports time"),
        ("def f():\n    import random\n", "x.py:2 imports random"),
        ("import numpy, asyncio", "x.py:1 imports asyncio"),
        ("from threading import Lock", "x.py:1 imports threading"),
        ("from anyio import sleep", "x.py:1 imports anyio"),
        ("import trio.lowlevel", "x.py:1 imports trio.lowlevel"),
        ("import socket", "x.py:1 imports socket"),
    ],
)
def test_the_checker_names_file_line_and_module(source, hit):
    assert forbidden_imports(source, "x.py") == [hit]


@pytest.mark.parametrize("source", ["from . import time", "from .os import x", "import timeit", "import osmium",
                                    "from typing import Sequence"])
def test_the_checker_ignores_relative_and_lookalike_imports(source):
    assert forbidden_imports(source, "x.py") == []
