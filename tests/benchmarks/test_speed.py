"""The speed benchmarks return well-formed results on tiny sizes (no timing assertions)."""

import math
import shutil

import pytest

from benchmarks import speed


def positive(*values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_standard_runs_each_size_in_a_child_and_reports_per_request_cost():
    rows = speed.standard([40, 80])
    assert [r["requests"] for r in rows] == [40, 80]
    for r in rows:
        assert positive(r["wall_s"], r["req_per_s"], r["us_per_req"], r["rss_mb"], r["events"], r["flatness"])
        assert r["finished"] == r["requests"] and 1 <= len(r["walls_s"]) <= 5
        assert r["vidur_speedup"] is None  # no reference at these sizes
    assert rows[0]["flatness"] == 1.0
    assert "standard" in speed.report_standard(rows)


def test_large_offers_the_pool_a_fraction_of_the_measured_capacity():
    r = speed.large(100, workers=2, tenants=5, saturation_requests=100, target_requests=1_000)
    assert r["workers"] == 2 and r["tenants"] == 5 and r["requests"] > 0
    assert math.isclose(r["pool_rate"], 0.9 * 2 * r["worker_capacity"])
    assert positive(r["wall_s"], r["rss_mb"], r["extrapolated_wall_s"], r["extrapolated_rss_mb"], r["sim_s"])
    assert 0 < r["busy"] <= 1
    assert "wall s @1,000 " in speed.report_large(r)


def test_core_varies_one_axis_around_the_base_point():
    base = {"running": 4, "queued": 6, "tenants": 2}
    rows = speed.core({"running": (2, 4), "tenants": (1, 2)}, base, steps=20)
    assert [(r["axis"], r["running"], r["tenants"]) for r in rows] == [
        ("running", 2, 2), ("running", 4, 2), ("tenants", 4, 1), ("tenants", 4, 2)]
    assert rows[1]["policies"] is rows[3]["policies"]  # the base point is measured once
    for r in rows:
        assert r["queued"] == 6 and positive(r["step_ms"])
        for p in ("fcfs", "vtc"):
            assert positive(r["policies"][p]["median_us"], r["policies"][p]["mean_us"], r["share"][p])
    assert "vtc median us" in speed.report_core(rows)


def test_core_point_keeps_the_batch_full_and_admits_after_eos():
    r = speed.core_point("vtc", running=3, queued=5, tenants=2, steps=16, eos_every=2)
    assert positive(r["median_us"], r["p99_us"]) and r["mean_us"] >= 0


def test_fastforward_on_and_off_are_identical():
    r = speed.fastforward(60)
    assert r["identical"], r["differences"]
    assert r["off_events"] >= r["on_events"] > 0
    assert "identical" in speed.report_fastforward(r)


def test_differences_names_the_paths_that_differ():
    a = {"x": 1.0, "y": [1, {"z": float("nan")}], "s": "a"}
    assert speed._differences(a, {"x": 1.0 + 1e-12, "y": [1, {"z": float("nan")}], "s": "a"}, "r") == []
    assert speed._differences(a, {"x": 1.1, "y": [2, {"z": 0.0}], "s": "b"}, "r") == ["r.x", "r.y[0]", "r.y[1].z",
                                                                                         "r.s"]


def test_quick_command_line_prints_every_table(capsys):
    assert speed.main(["core", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "core:" in out and "running" in out


def test_against_runs_both_checkouts_and_says_whether_their_results_are_the_same(tmp_path):
    # this checkout against itself: the same results to the bit; a changed cost model is caught
    tables = {"standard 40": speed.standard_table(40)}
    [same] = speed.against(speed.ROOT, tables, pairs=1)
    assert same["identical"] and same["workers_off"] == 0.0 and positive(same["before_s"], same["after_s"])
    assert same["before_events"] == same["after_events"] > 0
    other = tmp_path / "other"
    for part in ("scheduler", "sim"):
        shutil.copytree(speed.ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    steptime = other / "sim" / "steptime.py"
    text = steptime.read_text()
    assert "return (\n            self.constant_step_s" in text
    steptime.write_text(text.replace("return (\n            self.constant_step_s",
                                     "return 1e-6 + (\n            self.constant_step_s"))
    [changed] = speed.against(other, tables, pairs=1)
    assert not changed["identical"]
    assert "DIFFERENT" in speed.report_against(other, [changed])


def test_against_refuses_a_folder_that_is_not_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        speed.main(["against", str(tmp_path)])
    assert "give another checkout of fairbatch" in capsys.readouterr().err
