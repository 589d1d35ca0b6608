"""`fairbatch bench sweep GRID.toml`: the product of axes of dotted config keys over a base scenario.

    scenario = "azure_conv_4tenants"    # a name in benchmarks/scenarios, a path relative to this
                                        # file, or a list of them (an axis of its own)
    [base]                              # set on every point
    duration_s = 120
    [axes]                              # key = [values]; the grid is the product of the axes
    "scheduler.policy" = ["fcfs", "vtc"]
    load = [1.0, 2.0, 4.0]

Keys may be quoted ("cluster.workers") or nested TOML tables ([axes.cluster] workers = [1, 2]).
Every key and every point is checked before anything runs: an unknown key, an empty axis or an
invalid value is an error naming it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scheduler.errors import ConfigError
from sim.config import read_toml

from .points import Point, check_key, label_name, load_table, make_point, with_overrides

GRID_KEYS = ("scenario", "base", "axes")


@dataclasses.dataclass(frozen=True, slots=True)
class Grid:
    scenarios: tuple[str, ...]  # names in benchmarks/scenarios or absolute paths
    base: dict[str, Any]
    axes: dict[str, list]

    @property
    def size(self) -> int:
        n = len(self.scenarios)
        for values in self.axes.values():
            n *= len(values)
        return n


def load_grid(path: str | Path) -> Grid:
    return grid_from_dict(read_toml(path, "grid file"), Path(path).resolve().parent)


def grid_from_dict(table: Mapping[str, Any], base_dir: Path | None = None) -> Grid:
    unknown = sorted(set(table) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown grid key; allowed: {', '.join(GRID_KEYS)}")
    scenarios = _scenarios(table.get("scenario"), base_dir)
    first = load_table(scenarios[0])
    base = _flatten(table.get("base", {}), "base", first)
    axes = _flatten(table.get("axes", {}), "axes", first)
    if not axes:
        raise ConfigError("axes: the grid is empty; give at least one axis, e.g. load = [1.0, 2.0]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{key}: must be a non-empty list of values, got {values!r}")
    return Grid(scenarios, base, axes)


def _scenarios(value: Any, base_dir: Path | None) -> tuple[str, ...]:
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"scenario: must be a scenario name or path, or a non-empty list of them; got {value!r}")
    return tuple(_scenario(n, base_dir) for n in names)


def _scenario(name: str, base_dir: Path | None) -> str:
    """Paths (with a / or .toml) are relative to the grid file; bare names are built-in scenarios."""
    if ("/" in name or name.endswith(".toml")) and base_dir is not None and not Path(name).is_absolute():
        return str((base_dir / name).resolve())
    return name


def _flatten(table: Any, where: str, scenario: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys from nested tables: a key stops at the first prefix that is a config key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table of dotted config keys, got {table!r}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        try:
            check_key(scenario, dotted)
        except ConfigError as err:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{err}") from None
            out |= _flatten(value, where, scenario, dotted + ".")
            continue
        out[dotted] = value
    return out


def grid_points(grid: Grid) -> list[Point]:
    """Every point of the grid, validated; labels are the scenario and each axis's value."""
    points = []
    keys = list(grid.axes)
    for scenario in grid.scenarios:
        base = with_overrides(load_table(scenario), grid.base)
        for values in itertools.product(*grid.axes.values()):
            overrides = dict(zip(keys, values))
            labels = {"scenario": Path(scenario).stem, **{label_name(k): v for k, v in overrides.items()}}
            points.append(make_point(labels, with_overrides(base, overrides)))
    return points
