"""compare: the grid of loads x policies x placements, and its tables."""

import pytest

from benchmarks.compare import compare_markdown, compare_points
from benchmarks.runner import SerialExecutor, run_points
from benchmarks.store import Outcome, Store
from scheduler.errors import ConfigError

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures


def test_the_grid_is_loads_by_policies_by_placements(tiny_scenario):
    points = compare_points(tiny_scenario, ["fcfs", "vtc"], [1.0, 2.0], ["global", "round_robin"],
                            {"cluster.workers": 2})
    assert len(points) == 8
    assert points[0].labels == {"scenario": "tiny", "policy": "fcfs", "placement": "global", "load": 1.0}
    assert points[-1].labels == {"scenario": "tiny", "policy": "vtc", "placement": "round_robin", "load": 2.0}
    table = points[-1].table
    assert table["scheduler"]["policy"] == "vtc" and table["scheduler"]["placement"] == "round_robin"
    assert table["load"] == 2.0 and table["cluster"]["workers"] == 2
    assert compare_points(tiny_scenario, ["fcfs"])[0].labels["placement"] == "global"  # the scenario's


def test_bad_choices_are_named_before_anything_runs(tiny_scenario):
    with pytest.raises(ConfigError, match="--policies: give at least one value"):
        compare_points(tiny_scenario, [], [1.0])
    with pytest.raises(ConfigError, match="scheduler.placement: unknown placement 'nearest'"):
        compare_points(tiny_scenario, ["fcfs"], [1.0], ["nearest"])


def test_markdown_has_a_results_table_per_load_and_lists_failures(tmp_path, tiny_scenario):
    points = compare_points(tiny_scenario, ["fcfs", "priority"], [1.0, 12.0])
    outcomes = run_points(points[:3], SerialExecutor(), Store(tmp_path)) + [Outcome(points[3], "failed",
                                                                                    error="Boom: no")]
    text = compare_markdown(outcomes)
    sections = [line for line in text.splitlines() if line.startswith("### ")]
    assert sections[0].startswith("### tiny, load x1 (offered ") and sections[1].startswith("### tiny, load x12")
    assert text.count("| series | completed |") == 2 and "| fcfs |" in text and "| priority |" in text
    assert "p99 TTFT in ms" in text and "Service share" in text
    assert "- scenario=tiny, policy=priority, placement=global, load=12.0: Boom: no" in text
