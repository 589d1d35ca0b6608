"""Fixtures of the benchmark suite tests (a plugin: `pytest_plugins = ["bench_fixtures"]`), kept out
of a conftest.py so that `from conftest import ...` elsewhere in tests/ keeps meaning one module."""

from pathlib import Path

import pytest

from bench_helpers import SHARED_DATA, tiny_table
from benchmarks import tomlwrite


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real traces not found at {SHARED_DATA} (the shared data folder sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def tiny_scenario(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tomlwrite.dumps(tiny_table()))
    return path
