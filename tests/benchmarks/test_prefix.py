"""`fairbatch bench prefix`: its grid, its tables and headline figures, and (slow, with the shared
data) a short real run in which the cache and cache-aware routing do what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.prefix import PLACEMENT_ORDER, WORKLOADS, headline, prefix_markdown, prefix_points, run_prefix
from benchmarks.regenerate import replace_section
from benchmarks.store import Outcome
from scheduler.placement import PLACEMENTS

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MOONCAKE = DATA / "mooncake_fast25_conversation.jsonl.gz"


def test_the_grid_runs_every_placement_with_the_cache_on_and_a_baseline_without():
    points = prefix_points(DATA)
    assert set(PLACEMENT_ORDER) == set(PLACEMENTS)
    mooncake = [p.labels for p in points if p.labels["scenario"] == "mooncake" and "reference" not in p.labels]
    assert [(l["placement"], l["cache"]) for l in mooncake] == [("global", "off")] + [(p, "on") for p in PLACEMENT_ORDER]
    references = [p for p in points if "reference" in p.labels]
    assert len(references) == 2 and all(p.table["scheduler"]["num_gpu_blocks"] > 10**6 for p in references)
    contended = [p for p in points if p.labels["scenario"] == "contended"]
    assert {p.labels["policy"] for p in contended} == {"vtc", "dlpm"} and all(
        p.table["cluster"]["workers"] == 1 for p in contended)
    assert len({p.key for p in points}) == len(points)  # no run twice
    assert set(WORKLOADS) == {p.labels["scenario"] for p in points}


def outcome(labels, hit, ttft, tenants=("a",)):
    summary = {"prefix_cache_hit_rate": hit, "median_ttft_ms": ttft, "p99_ttft_ms": 2 * ttft, "median_tpot_ms": 10.0,
               "p99_tpot_ms": 20.0, "request_throughput": 5.0, "output_throughput": 500.0}
    doc = {"summary": summary, "fairness": {"jain_index": 0.9},
           "tenants": {t: {"service_share": 1 / len(tenants), "prefix_cache_hit_rate": hit} for t in tenants}}
    point = type("P", (), {"labels": {"scenario": "mooncake", "policy": "fcfs", "cache": "on"} | labels})()
    return Outcome(point, "ok", doc)


def test_the_headline_compares_affinity_with_round_robin_and_the_unlimited_cache():
    outcomes = [outcome({"placement": "prefix_affinity"}, 0.14, 600.0),
                outcome({"placement": "round_robin"}, 0.06, 4800.0),
                outcome({"placement": "global", "reference": "unlimited, 1 worker"}, 0.35, 1e6),
                outcome({"placement": "prefix_affinity", "reference": "unlimited, prefix_affinity"}, 0.33, 400.0)]
    head = headline(outcomes)
    assert head == {"affinity_hit_rate": 0.14, "unlimited_hit_rate": 0.35, "unlimited_affinity_hit_rate": 0.33,
                    "ttft_p50_ratio": 8.0}
    table = prefix_markdown(outcomes)
    assert "| fcfs | prefix_affinity | on | 14.0% | 600 |" in table and "unlimited, 1 worker" in table


def test_a_section_replaces_itself_and_keeps_the_others(tmp_path):
    report = tmp_path / "RESULTS.md"
    report.write_text("# r\n\n## A\n\nold a\n\n## B\n\nb\n")
    replace_section(report, "## A", "## A\n\nnew a")
    replace_section(report, "## C", "## C\n\nc")
    assert report.read_text() == "# r\n\n## A\n\nnew a\n\n## B\n\nb\n\n## C\n\nc\n"


@pytest.mark.slow
@pytest.mark.skipif(not MOONCAKE.is_file(), reason="the Mooncake trace is in ../shared/data")
def test_a_short_run_shows_the_cache_and_affinity_at_work(tmp_path):
    markdown, head = run_prefix(tmp_path / "out", data=DATA, duration_s=120.0, jobs=1, progress=False)
    assert head["unlimited_hit_rate"] > head["affinity_hit_rate"] > 0.05
    assert head["ttft_p50_ratio"] > 1 and head["figure"].is_file()
    assert "### mooncake" in markdown and "### contended" in markdown
