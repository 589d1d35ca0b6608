"""The packages import only downward, benchmarks -> sim -> scheduler, and no module of theirs uses
another module's underscore names. Checked on the source with `ast`, so a lazy import inside a
function counts too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("scheduler", "sim", "benchmarks")  # bottom to top: each may import the ones below it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for floor in FLOORS for p in sorted((ROOT / floor).rglob("*.py"))}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imported_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of the module a `from ... import` reads from."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def above(importer: str, target: str) -> bool:
    mine, theirs = importer.split(".")[0], target.split(".")[0]
    return theirs in FLOORS and mine in FLOORS and FLOORS.index(theirs) > FLOORS.index(mine)


def layering_violations(source: str, module: str, modules=frozenset(), is_package: bool = False) -> list[str]:
    """'module:line ...' for every upward import, every underscore name imported from another
    module, and every `module._name` read of another project module (`modules` names them)."""
    found, bound = [], {}  # bound: local name -> the project module it stands for
    tree = ast.parse(source, module)
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += [f"{where} imports {alias.name}, a floor above"] if above(module, alias.name) else []
                local = alias.asname or alias.name.split(".")[0]
                bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            source_module = imported_module(node, module, is_package)
            if above(module, source_module):
                found.append(f"{where} imports {source_module}, a floor above")
            for alias in node.names:
                if is_private(alias.name) and source_module != module:
                    found.append(f"{where} imports {alias.name} from {source_module}")
                if f"{source_module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{source_module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = dotted(node.value, bound)
            if owner is not None and owner != module and (owner in modules or owner.split(".")[0] in FLOORS):
                found.append(f"{module}:{node.lineno} reads {owner}.{node.attr}")
    return found


def dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """The module an expression such as `sim.workload` names, through the names imports bound."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = dotted(node.value, bound)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def test_every_package_imports_only_downward_and_no_underscore_name_of_another_module():
    modules = project_modules()
    assert {"scheduler.core", "sim.cli", "benchmarks.main"} <= set(modules)
    offenders = [
        hit for name, path in modules.items()
        for hit in layering_violations(path.read_text(), name, frozenset(modules), path.name == "__init__.py")
    ]
    assert not offenders, "imports must go down (benchmarks -> sim -> scheduler), and names with a leading " \
                          "underscore stay in their module:\n" + "\n".join(offenders)


MODULES = frozenset({"sim", "sim.workload", "sim.validation", "sim.cli", "benchmarks", "benchmarks.cli"})


@pytest.mark.parametrize(
    "module,source,hit",
    [
        ("scheduler.core", "from sim.cluster import simulate", "scheduler.core:1 imports sim.cluster, a floor above"),
        ("scheduler.kv", "import benchmarks.cli", "scheduler.kv:1 imports benchmarks.cli, a floor above"),
        ("sim.cli", "def main():\n    from benchmarks.cli import main\n",
         "sim.cli:2 imports benchmarks.cli, a floor above"),
        ("sim.cli", "from ..benchmarks import cli", "sim.cli:1 imports benchmarks, a floor above"),
        ("sim.config", "from .workload import _shown", "sim.config:1 imports _shown from sim.workload"),
        ("benchmarks.main", "from sim.workload import check_quota_admits, _bound",
         "benchmarks.main:1 imports _bound from sim.workload"),
        ("sim.hardware", "from . import workload\nworkload._shown(1)", "sim.hardware:2 reads sim.workload._shown"),
        ("benchmarks.main", "import sim.workload\nsim.workload._decode", "benchmarks.main:2 reads sim.workload._decode"),
        ("sim.serve", "import sim.validation as v\nv._is_int(1)", "sim.serve:2 reads sim.validation._is_int"),
    ],
)
def test_the_checker_flags_upward_imports_and_underscore_names(module, source, hit):
    assert layering_violations(source, module, MODULES) == [hit]


@pytest.mark.parametrize(
    "module,source",
    [
        ("benchmarks.main", "from sim import cli\ncli.run_simulate"),
        ("sim.cli", "from scheduler.errors import ConfigError\nfrom .config import load_config"),
        ("sim.hardware", "from .validation import check_keys as _check_keys"),
        ("scheduler.core", "from __future__ import annotations\nimport numpy as np\nnp._core"),
        ("sim.workload", "self._ranges; spec._check(0); (1)._x"),
        ("sim.workload", "import sim.workload\nsim.workload._resolve"),
    ],
)
def test_the_checker_allows_downward_imports_and_names_of_ones_own(module, source):
    assert layering_violations(source, module, MODULES) == []
