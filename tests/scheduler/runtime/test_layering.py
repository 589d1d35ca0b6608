"""Only scheduler/runtime/ imports anyio (and the serving stack); the runtime's core parts work
without the `serve` extra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ASYNC = {"anyio", "asyncio", "trio", "sniffio", "starlette", "hypercorn", "h11", "httpx"}  # and the HTTP stack


def async_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ASYNC]
    return found


def test_nothing_outside_the_runtime_imports_an_async_library():
    runtime = ROOT / "scheduler" / "runtime"
    files = [p for folder in ("scheduler", "sim") for p in (ROOT / folder).rglob("*.py") if runtime not in p.parents]
    assert ROOT / "sim" / "serve.py" in files
    assert [hit for path in files for hit in async_imports(path)] == []


def test_the_runtime_imports_no_http_stack_until_asked():
    code = "import sys, scheduler.runtime, sim.serve; print(sorted({'starlette', 'hypercorn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
