"""Drivers, metrics and benchmarks read the scheduler core only through its public API
(`scheduler.core.PUBLIC_API`): no worker states, queues, ledger, policy or placement objects.
Checked on the source with `ast`: every attribute read on an expression that names a scheduler
(`scheduler`, `self.scheduler`, `runtime.scheduler`, and local names bound to one or to a
`Scheduler(...)`). A SchedulerConfig is often called `scheduler` too: its fields are values."""

import ast
from pathlib import Path

from scheduler.core import PUBLIC_API, Scheduler, SchedulerConfig

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = [*(ROOT / "sim").rglob("*.py"), *(ROOT / "scheduler" / "runtime").rglob("*.py"),
           ROOT / "scheduler" / "metrics.py", *(ROOT / "benchmarks").rglob("*.py")]
NAMES = {"scheduler"}
CONFIG_VALUES = {name for name, value in vars(SchedulerConfig).items() if isinstance(value, property)}
ALLOWED = PUBLIC_API | set(SchedulerConfig.__dataclass_fields__) | CONFIG_VALUES


def names_a_scheduler(node: ast.expr, aliases: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in NAMES or node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr in NAMES


def internal_reads(source: str, where: str) -> list[str]:
    """'where:line .attr' for every attribute of a scheduler the public API does not have."""
    tree = ast.parse(source, where)
    aliases = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and (names_a_scheduler(node.value, set()) or builds_a_scheduler(node.value))
               for target in node.targets if isinstance(target, ast.Name)}
    return [f"{where}:{node.lineno} .{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and names_a_scheduler(node.value, aliases)
            and node.attr not in ALLOWED]


def builds_a_scheduler(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Scheduler"


def test_the_drivers_read_the_core_only_through_its_public_api():
    found = [hit for path in DRIVERS for hit in internal_reads(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


def test_the_check_finds_a_read_of_the_cores_internals():
    source = ("def f(self):\n    s = self.scheduler\n    return s.workers[0].pool.used, self.scheduler.ledger\n"
              "def g(scheduler):\n    return scheduler.num_waiting, scheduler.placement\n"
              "def h():\n    core = Scheduler([])\n    return core.live, core.config.block_size\n")
    assert sorted(internal_reads(source, "x.py")) == [
        "x.py:3 .ledger", "x.py:3 .workers", "x.py:5 .placement", "x.py:8 .live"]


def test_every_name_of_the_public_api_exists():
    s = Scheduler([])
    assert [name for name in sorted(PUBLIC_API) if not hasattr(s, name)] == []
