"""Grid files: dotted keys (quoted or nested), validation before work, the product of the axes."""

import os

import pytest

from bench_helpers import tiny_table
from benchmarks.points import make_point, with_overrides
from benchmarks.runner import make_executor, run_points
from benchmarks.store import Store, dump_json
from benchmarks.sweep import grid_from_dict, grid_points, load_grid
from scheduler.errors import ConfigError

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures


def test_axes_may_be_quoted_or_nested_and_the_grid_is_their_product(tiny_scenario):
    grid = grid_from_dict({"scenario": str(tiny_scenario), "base": {"duration_s": 4.0, "cluster": {"workers": 2}},
                           "axes": {"scheduler": {"policy": ["fcfs", "vtc"]}, "load": [1.0, 2.0, 3.0],
                                    "tenants.b.slo": [{"ttft_ms": 500}]}})
    assert grid.base == {"duration_s": 4.0, "cluster.workers": 2}
    assert list(grid.axes) == ["scheduler.policy", "load", "tenants.b.slo"] and grid.size == 6
    points = grid_points(grid)
    assert len(points) == 6 and len({p.key for p in points}) == 6
    assert points[1].labels == {"scenario": "tiny", "policy": "fcfs", "load": 2.0, "tenants.b.slo": {"ttft_ms": 500}}
    assert points[1].table["cluster"]["workers"] == 2 and points[1].table["tenants"][1]["slo"] == {"ttft_ms": 500}


def test_scenario_paths_are_relative_to_the_grid_file(tmp_path, tiny_scenario):
    (tmp_path / "grids").mkdir()
    path = tmp_path / "grids" / "g.toml"
    path.write_text('scenario = ["../tiny.toml", "azure_code"]\n[axes]\nload = [1.0]\n')
    assert load_grid(path).scenarios == (str(tiny_scenario), "azure_code")


@pytest.mark.parametrize("table, message", [
    ({"axes": {"load": [1.0]}, "extra": 1}, "extra: unknown grid key; allowed: scenario, base, axes"),
    ({"axes": {}}, "axes: the grid is empty; give at least one axis"),
    ({"axes": {"load": []}}, r"axes.load: must be a non-empty list of values, got \[\]"),
    ({"axes": {"load": 2.0}}, "axes.load: must be a non-empty list of values, got 2.0"),
    ({"axes": {"cluster.gpus": [1]}}, "axes.cluster.gpus: unknown config key; allowed: seed"),
    ({"axes": {"clutser": {"workers": [1]}}}, "axes.clutser.workers: unknown config key; allowed"),
    ({"axes": {"tenants.zz.rate": [1]}}, "axes.tenants.zz.rate: no tenant named 'zz'"),
    ({"base": {"lod": 2}, "axes": {"load": [1.0]}}, "base.lod: unknown config key"),
])
def test_bad_grids_fail_naming_the_field(tiny_scenario, table, message):
    with pytest.raises(ConfigError, match=message):
        grid_from_dict({"scenario": str(tiny_scenario), **table})


def test_an_invalid_value_fails_before_anything_runs_naming_the_point(tiny_scenario):
    grid = grid_from_dict({"scenario": str(tiny_scenario), "axes": {"scheduler.policy": ["vtc", "fifo"]}})
    with pytest.raises(ConfigError, match=r"scheduler.policy.*'fifo'.*\(point scenario=tiny, policy=fifo\)"):
        grid_points(grid)


def test_missing_or_broken_grid_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="grid file not found"):
        load_grid(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("axes = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_grid(tmp_path / "bad.toml")


@pytest.mark.slow
def test_a_sweep_on_ray_matches_the_process_pool(tmp_path, tiny_scenario, monkeypatch):
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    grid = grid_from_dict({"scenario": str(tiny_scenario),
                           "axes": {"scheduler.policy": ["fcfs", "vtc", "drr"], "load": [2.0, 12.0]}})
    points = grid_points(grid)
    with make_executor("process", 2) as pool:
        pooled = run_points(points, pool, Store(tmp_path / "pool"))
    ray_executor = make_executor("ray")
    try:
        on_ray = run_points(points, ray_executor, Store(tmp_path / "ray"))
        idle = [{"name": "idle", "rate": 0.0, "prompt_tokens": 5, "output_tokens": 5}]
        broken = make_point({}, with_overrides(tiny_table(tenants=idle), {"requests": 10}))
        [failed] = run_points([broken], ray_executor, Store(tmp_path / "ray"))
    finally:
        ray_executor.shutdown()
    assert failed.status == "failed" and failed.error.startswith("ConfigError: requests: asked for 10")
    assert [o.status for o in on_ray] == ["ok"] * 6
    assert [dump_json(o.doc) for o in on_ray] == [dump_json(o.doc) for o in pooled]
    assert sorted(os.listdir(tmp_path / "ray" / "runs")) == sorted(os.listdir(tmp_path / "pool" / "runs"))
