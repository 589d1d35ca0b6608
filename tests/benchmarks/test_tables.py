"""Markdown tables and the grouping of points into scenario, load and series."""

from benchmarks.tables import capacity_table, fmt, group, md_table, results_table, series_names, tenant_tables


def doc(ttft: float, share_a: float) -> dict:
    doc = {"summary": {"completed": 1200, "request_throughput": 12.345, "p99_ttft_ms": ttft, "utilisation": 0.5},
            "goodput": {"ttft_attainment": 0.987, "offered_request_rate": 12.5},
            "fairness": {"jain_index": 0.91234, "max_service_gap": None},
            "tenants": {"a": {"p99_ttft_ms": ttft, "service_share": share_a},
                        "b": {"p99_ttft_ms": 2 * ttft, "service_share": 1 - share_a}}}
    doc["goodput"]["tenants"] = {"a": {"attainment": 1.0}, "b": {"attainment": 0.5}}
    return doc


def test_cells_scale_their_digits_and_show_fractions_as_percentages():
    assert [fmt(x) for x in (None, 1234567, 1234.5, 12.345, 1.2345, 0.01234, 0.0)] == \
        ["-", "1,234,567", "1,234", "12.3", "1.23", "0.012", "0.00"]
    assert fmt(0.987, "ttft_attainment") == "98.7%" and fmt(0.91234, "jain_index") == "0.912"
    assert fmt("x") == "x"


def test_series_names_keep_only_the_labels_that_vary():
    labels = [{"scenario": "s", "policy": p, "placement": "global", "load": 1.0, "seed": seed}
              for p in ("fcfs", "vtc") for seed in (0, 1)]
    assert series_names(labels) == ["fcfs / seed=0", "fcfs / seed=1", "vtc / seed=0", "vtc / seed=1"]
    assert series_names([{"policy": "vtc", "load": 1.0}]) == ["vtc"]
    assert series_names([{"load": 1.0}]) == ["run"]


def test_points_group_by_scenario_then_load_in_manifest_order():
    points = [{"key": k, "labels": {"scenario": "s", "policy": p, "load": load}}
              for k, p, load in (("1", "fcfs", 2.0), ("2", "vtc", 2.0), ("3", "fcfs", 1.0), ("4", "vtc", 1.0))]
    grouped = group(points, {"1": doc(1, 0.5), "2": doc(2, 0.5), "4": doc(4, 0.5)})
    assert list(grouped["s"]) == [2.0, 1.0]
    assert [name for name, _ in grouped["s"][2.0]] == ["fcfs", "vtc"]
    assert [name for name, _ in grouped["s"][1.0]] == ["vtc"]  # point 3 has no document


def test_results_and_tenant_tables_use_the_metric_keys():
    rows = [("fcfs", doc(100.0, 0.25)), ("vtc", doc(50.0, 0.5))]
    table = results_table(rows).splitlines()
    assert table[0].startswith("| series | completed | unfinished | request_throughput |")
    assert "p99_ttft_ms" in table[0] and "jain_index" in table[0]
    assert table[2].startswith("| fcfs | 1,200 | - | 12.3 |") and "| 98.7% |" in table[2]
    tenants = tenant_tables(rows)
    assert "| a | 100 (100.0%) | 50.0 (100.0%) |" in tenants and "| b | 200 (50.0%) | 100 (50.0%) |" in tenants
    assert "| b | 75.0% | 50.0% |" in tenants


def test_capacity_table_and_md_table():
    table = capacity_table({"vtc": {"capacity": 2.5, "at_capacity": {"offered_request_rate": 25.0,
                                                                      "ttft_attainment": 0.95, "tpot_attainment": 1},
                                    "probes": [1, 2, 3], "note": None}})
    assert "| vtc | 2.50 | 25.0 | 95.0% | 100.0% | 3 |  |" in table
    assert md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
