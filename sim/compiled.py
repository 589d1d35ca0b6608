"""The optional compiled build: the hot modules of the core and the simulator compiled with mypyc.

    pip install -e '.[compile]'      # mypyc (part of mypy); a C compiler must be on the machine
    fairbatch compile                # compiles them in place, beside their sources
    fairbatch compile --clean        # back to pure Python

The pure-Python modules are the default and the reference: a compiled build gives the same results
to the bit, and CI runs the whole test suite both ways. A compiled module is imported instead of
its source, so after editing a source, compile again (or clean): `stale()` names the modules whose
source is newer than their build, and `fairbatch` warns of them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scheduler.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# The modules every event goes through (what profiles of the standard workload and the large pool
# show), with VTC's policy and the policies' base classes (which the interpreted policies subclass)
# and the ledger fair policies read.
# The rest run once per simulation or check user input: the cost model (whose step prices are
# sim/steptime.py's), the service weights and admission stay interpreted, since a compiled class's
# typed fields would refuse a value of the wrong type with a TypeError before its own check could
# name the field.
MODULES = ("scheduler/core.py", "scheduler/sequence.py", "scheduler/decodeset.py", "scheduler/kv.py",
           "scheduler/planner.py", "scheduler/worker.py", "scheduler/isolation.py", "scheduler/ledger.py",
           "scheduler/policies/base.py", "scheduler/policies/vtc.py", "sim/engine.py", "sim/cluster.py",
           "sim/steptime.py")
INSTALL = "pip install -e '.[compile]'"


def build(root: Path = ROOT) -> list[Path]:
    """Compile MODULES in place under `root` (a checkout); returns the extension modules written."""
    if importlib.util.find_spec("mypyc") is None:
        raise ConfigError(f"fairbatch compile: mypyc is not installed; {INSTALL}")
    done = subprocess.run([sys.executable, "-m", "mypyc", *MODULES], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise ConfigError(f"fairbatch compile: mypyc failed (a C compiler is needed):\n{done.stdout[-3000:]}"
                          f"{done.stderr[-3000:]}")
    return built(root)


def built(root: Path = ROOT) -> list[Path]:
    """The compiled modules under `root`, and the library they share."""
    found = [path for module in MODULES for path in (root / module).parent.glob(f"{Path(module).stem}.*.so")]
    return found + sorted(root.glob("*__mypyc.*.so"))


def clean(root: Path = ROOT) -> list[Path]:
    """Remove the compiled build under `root`; returns what was removed."""
    removed = built(root)
    for path in removed:
        path.unlink()
    shutil.rmtree(root / "build", ignore_errors=True)
    return removed


def stale(root: Path = ROOT) -> list[str]:
    """The modules whose compiled build is older than their source (it is what Python imports)."""
    old = []
    for module in MODULES:
        source = root / module
        for path in source.parent.glob(f"{source.stem}.*.so"):
            if os.stat(path).st_mtime < os.stat(source).st_mtime:
                old.append(module)
    return old


def compiled_modules() -> list[str]:
    """The modules of MODULES imported from a compiled build in this process (or that would be)."""
    names = [module.removesuffix(".py").replace("/", ".") for module in MODULES]
    return [name for name in names if (spec := importlib.util.find_spec(name)) and str(spec.origin).endswith(".so")]


def main(clean_build: bool = False) -> int:
    if clean_build:
        removed = clean()
        print(f"removed {len(removed)} compiled files; fairbatch runs as pure Python" if removed else
              "no compiled build to remove")
        return 0
    paths = build()
    print(f"compiled {len(MODULES)} modules ({len(paths)} files, beside their sources); "
          "`fairbatch compile --clean` removes them")
    return 0
