"""`fairbatch bench isolation`: its grid, one real short case in which isolation does what it
claims, the ratios and targets computed from run documents, the tables and the figure."""

from __future__ import annotations

import pytest

from benchmarks.isolation import (FAIR, KINDS, MECHANISMS, family, family_markdown, headline, isolation_figure,
                                  isolation_points, mechanism_points, mechanisms_markdown, run_isolation_point,
                                  vtc_markdown)
from benchmarks.store import Outcome
from scheduler.errors import ConfigError


def test_the_grid_covers_every_kind_size_and_setting_with_a_baseline_each():
    points = isolation_points(sizes=(2, 50), workers=(1, 4), policies=("vtc", "priority"))
    labels = [p.labels for p in points]
    assert {l["policy"] for l in labels} == {"fcfs", "vtc", "priority"}  # fcfs: the reference, always
    assert {l["isolation"] for l in labels if l["policy"] == "vtc"} == {"off", "on"}
    assert {l["isolation"] for l in labels if l["policy"] != "vtc"} == {"n/a"}
    # per workers x policy x setting: the quiet tenants alone, and every kind x size
    assert len(points) == 2 * (1 + 2 + 1) * (1 + len(KINDS) * 2)
    assert len({p.key for p in points}) == len(points)
    by = {(l["kind"], l["size"], l["workers"], l["policy"], l["isolation"]): p for l, p in zip(labels, points)}
    alone = by[("none", 0, 4, "vtc", "off")].table
    assert [t["name"] for t in alone["tenants"]] == ["alpha", "beta", "gamma"]
    assert alone["scheduler"]["isolation"] is False and alone["load"] == 4.0 and alone["cluster"]["workers"] == 4
    flood = by[("short", 50, 1, "vtc", "on")].table
    rate = next(t["rate"] for t in flood["tenants"] if t["name"] == "flooder")
    assert rate == 400.0 * 25  # the scenario's 2x, scaled to 50x
    assert "isolation" not in flood["scheduler"]  # the defaults
    assert all(p.key.startswith("isolation-") for p in points)  # not run_point's documents


def test_overrides_reach_every_run_but_the_policy_and_isolation_stay_the_points():
    points = isolation_points(sizes=(2,), workers=(1,), policies=("vtc",),
                              overrides={"scheduler.latency_budget_tokens": 512, "scheduler.policy": "drr"})
    assert all(p.table["scheduler"]["latency_budget_tokens"] == 512 for p in points)
    assert {p.table["scheduler"]["policy"] for p in points} == {"fcfs", "vtc"}
    with pytest.raises(ConfigError, match="nope: unknown config key"):
        isolation_points(sizes=(2,), workers=(1,), policies=("vtc",), overrides={"nope": 1})


def test_unknown_policies_are_named():
    with pytest.raises(ConfigError, match="--policies: unknown nope"):
        isolation_points(policies=("nope",))


def test_every_mechanism_runs_alone_against_off_and_the_defaults():
    points = mechanism_points(workers=(1,), duration_s=10.0)
    assert {p.labels["mechanism"] for p in points} == set(MECHANISMS)
    assert len(points) == len(MECHANISMS) * (1 + len(KINDS))
    assert set(FAIR) >= {"vtc", "drr", "lcf"} and "fcfs" not in FAIR


def test_a_short_run_isolates_the_quiet_tenants_from_a_long_prompt_flood():
    points = {(p.labels["kind"], p.labels["isolation"]): p for p in isolation_points(
        sizes=(10,), workers=(1,), policies=("vtc",), duration_s=15.0) if p.labels["policy"] == "vtc"}
    docs = {key: run_isolation_point(p.table) for key, p in points.items() if key[0] in ("none", "long")}
    assert set(docs[("long", "on")]["tenants"]) == {"alpha", "beta", "gamma"}
    p99 = {key: max(t["p99_ttft_ms"] for t in doc["tenants"].values()) for key, doc in docs.items()}
    assert p99[("long", "on")] < 0.5 * p99[("long", "off")]  # the flood's prompts no longer take every step
    assert docs[("long", "on")]["summary"]["utilisation"] > 0.95


def outcome(kind, size, policy, isolation, p99, utilisation=0.99, computed=1000.0, censored=0, workers=1):
    labels = {"workers": workers, "policy": policy, "isolation": isolation, "kind": kind, "size": size}
    tenants = {name: {"requests": 100, "censored": censored, "p99_ttft_ms": p99 * scale, "slo_ttft_ms": 500.0,
                      "p99_queue_ms": p99 * scale / 2, "median_tpot_ms": 10.0 * scale}
               for name, scale in (("alpha", 1.0), ("beta", 0.5))}
    summary = {"utilisation": utilisation, "computed_token_throughput": computed, "mean_batch_size": p99 / 2,
               "kv_usage_mean": 0.5}
    doc = {"summary": summary, "tenants": tenants}
    return Outcome(type("P", (), {"labels": labels})(), "ok", doc)


def family_outcomes():
    return [outcome("none", 0, "fcfs", "n/a", 100.0), outcome("short", 10, "fcfs", "n/a", 5000.0, censored=50),
            outcome("none", 0, "vtc", "off", 100.0), outcome("short", 10, "vtc", "off", 400.0),
            outcome("none", 0, "vtc", "on", 120.0), outcome("short", 10, "vtc", "on", 180.0, 0.98, 995.0)]


def test_the_ratio_is_the_worst_quiet_tenants_against_its_own_baseline():
    cases = {(r["policy"], r["isolation"]): r for r in family(family_outcomes())}
    assert cases[("vtc", "off")]["ratio"] == pytest.approx(4.0)
    assert cases[("vtc", "on")]["ratio"] == pytest.approx(1.5)  # against the baseline with isolation on
    assert cases[("vtc", "on")]["utilisation"] == pytest.approx(0.98 / 0.99)
    assert cases[("vtc", "on")]["throughput"] == cases[("vtc", "on")]["throughput_off"] == pytest.approx(0.995)
    assert cases[("fcfs", "n/a")]["censored"] and not cases[("vtc", "on")]["censored"]
    head = headline(list(cases.values()))
    assert head["worst_ratio"] == pytest.approx(1.5) and head["worst_ratio_off"] == pytest.approx(4.0)
    assert head["within_ratio"] == head["within_slo"] == head["cases"] == 1


def test_the_tables_mark_censored_ratios_and_show_before_and_after(tmp_path):
    cases = family(family_outcomes())
    table = family_markdown(cases)
    assert "| 1 | 10x | >=50.00 | 4.00 -> 1.50 |" in table
    vtc = vtc_markdown(cases)
    assert "| short | 1 | 10x | 4.00 | 1.50 | 180 | 500 | 90.0 | 10.0 | 90.0 | 50.0% | 99.0% | 99.5% | 99.5% |" in vtc
    assert "alone: 1 worker(s): queue 60.0 ms, TPOT 10.0 ms, batch 60.0, KV 50.0%" in vtc
    assert isolation_figure(cases, tmp_path / "isolation.png").stat().st_size > 0


def test_the_mechanisms_table_reads_each_mechanism_against_off():
    outcomes = []
    for name in ("off", "defaults"):
        for kind in ("none", *KINDS):
            o = outcome(kind, 0 if kind == "none" else 10, "vtc", None, 100.0 if kind == "none" else 300.0,
                        computed=1000.0 if name == "off" else 990.0)
            o.point.labels = {k: v for k, v in o.point.labels.items() if k != "isolation"} | {"mechanism": name}
            outcomes.append(o)
    table = mechanisms_markdown(outcomes)
    assert "| 1 | defaults | 3.00 | 3.00 | 3.00 | 99.0% |" in table
    assert "| 1 | fair prefill | - | - | - | - |" in table


def test_an_unknown_policy_on_the_command_line_is_one_line(tmp_path, capsys):
    from benchmarks.cli import main

    assert main(["isolation", "--policies", "vtc,nope", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--policies: unknown nope" in capsys.readouterr().err


@pytest.mark.slow
def test_the_quick_family_runs_from_the_command_line_and_resumes_from_its_cache(tmp_path, capsys):
    from benchmarks.cli import main

    argv = ["isolation", "--quick", "--jobs", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "### vtc, case by case" in first and (tmp_path / "isolation.png").is_file()
    assert main(argv) == 0  # every point cached: the same tables
    assert capsys.readouterr().out == first
