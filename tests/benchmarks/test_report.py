"""Reports from saved results: sections, tables, figures and capacity, nothing simulated."""

import pytest

from bench_helpers import tiny_table
from benchmarks import capacity as cap
from benchmarks.compare import compare_points
from benchmarks.report import collect, setup, write_report
from benchmarks.session import Session
from benchmarks.tomlwrite import dumps
from scheduler.errors import ConfigError

pytest.importorskip("matplotlib", reason="reports draw figures with the optional `plot` extra (matplotlib): pip install -e '.[plot]'")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    scenario = root / "tiny.toml"
    scenario.write_text(dumps(tiny_table()))
    with Session("compare", root / "compare", cache=root / "runs", jobs=1, progress=False) as s:
        s.run(compare_points(scenario, ["fcfs", "priority"], [1.0, 12.0]))
    searches = cap.make_searches(cap.capacity_base(scenario), ["fcfs", "priority"], "tiny", start=8.0,
                                 tolerance=0.2)
    with Session("capacity", root / "capacity", cache=root / "runs", jobs=1, progress=False) as s:
        s.extra["capacity"] = cap.search(searches, s.run)
    return root


def test_report_has_a_section_per_scenario_tables_per_load_and_figures(results):
    path = write_report([results / "compare", results / "capacity"], results / "report" / "r.md", title="T")
    text = path.read_text()
    assert text.startswith("# T\n\n## tiny\n\n1 x h100 serving llama-3-8b")
    assert "### load x1 (offered " in text and "### load x12 (offered " in text
    assert text.count("| series | completed |") == 2 and "### Goodput capacity" in text
    assert "| fcfs | " in text.split("### Goodput capacity")[1]
    figures = sorted(p.name for p in (results / "report" / "figures").iterdir())
    assert figures == ["tiny-capacity.png", "tiny-cdf.png", "tiny-load.png", "tiny-service.png", "tiny-workers.png"]
    for name in figures:
        assert f"](figures/{name})" in text
    assert "over time at load x12" in text  # the highest load by default


def test_collect_keeps_capacity_probes_out_of_the_load_tables(results):
    points, docs, capacity = collect([results / "compare", results / "capacity"])
    assert len(points) == 4 and {p["labels"]["load"] for p in points} == {1.0, 12.0}
    assert list(capacity) == ["tiny"] and list(capacity["tiny"]) == ["fcfs", "priority"]
    assert all(p["key"] in docs for p in points)


def test_setup_describes_the_pool_and_the_tenants():
    text = setup(tiny_table(horizon_s=9.0))
    assert text.startswith("1 x h100 serving llama-3-8b (tp 1), max_num_batched_tokens 1024, 6 s of arrivals, "
                           "stopped at 9 s, seed 3.")
    assert "| b | 2 | 1 | gamma 2 req/s cv 2 | 400 / 30 | 1000 / - |" in text


def test_an_empty_or_missing_results_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no points.json here"):
        write_report([tmp_path], tmp_path / "r.md")


def test_without_matplotlib_the_report_keeps_its_tables(results, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    text = write_report([results / "compare"], results / "plain" / "r.md").read_text()
    assert "| series | completed |" in text and "they need matplotlib" in text
    assert not (results / "plain" / "figures").exists()
