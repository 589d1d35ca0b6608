"""Run documents on disk: atomic, cached by key, a manifest and a CSV of every point."""

import csv
import io
import json

from bench_helpers import tiny_table
from benchmarks.points import FORMAT, make_point
from benchmarks.store import Outcome, Store, csv_text, dump_json, load_results


def doc(key: str) -> dict:
    return {"format": FORMAT, "key": key, "seed": 3, "config": tiny_table(),
            "summary": {"requests": 10, "request_throughput": 1.5, "mean_ttft_ms": None,
                        "rejected_by_reason": {"queue_full": 1}},
            "goodput": {"ttft_attainment": 0.9, "tpot_attainment": 1.0, "attainment": 0.9,
                        "offered_request_rate": 2.0},
            "fairness": {"jain_index": 0.8, "max_service_gap": None}}


def test_saved_documents_are_found_by_key_and_bad_ones_are_not(tmp_path):
    store = Store(tmp_path)
    store.save("k1", doc("k1"))
    assert store.cached("k1") == doc("k1")
    assert (tmp_path / "runs" / "k1.toml").read_text().startswith("seed = 3\n")
    assert store.cached("k2") is None
    (tmp_path / "runs" / "k2.json").write_text('{"format": 1, "key": "k2", "su')  # a torn write
    assert store.cached("k2") is None
    (tmp_path / "runs" / "k3.json").write_text(dump_json({**doc("k3"), "format": FORMAT + 1}))
    assert store.cached("k3") is None
    assert not list((tmp_path / "runs").glob(".*tmp"))


def test_csv_has_a_row_per_point_with_failures_and_their_errors():
    a = make_point({"policy": "fcfs", "load": 1.0}, tiny_table())
    b = make_point({"policy": "vtc", "load": 2.0}, tiny_table(load=2.0))
    rows = list(csv.DictReader(io.StringIO(csv_text([
        Outcome(a, "cached", doc(a.key)), Outcome(b, "failed", error="ValueError: boom")]))))
    assert [r["policy"] for r in rows] == ["fcfs", "vtc"]
    assert rows[0]["status"] == "ok" and rows[0]["request_throughput"] == "1.5"
    assert rows[0]["mean_ttft_ms"] == "" and "rejected_by_reason" not in rows[0]
    assert rows[0]["ttft_attainment"] == "0.9" and rows[0]["jain_index"] == "0.8"
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "ValueError: boom"
    assert rows[1]["seed"] == "3" and rows[1]["request_throughput"] == ""


def test_manifest_and_documents_load_back(tmp_path):
    store = Store(tmp_path / "out", tmp_path / "cache")
    a = make_point({"policy": "fcfs"}, tiny_table())
    b = make_point({"policy": "vtc"}, tiny_table(seed=9))
    store.save(a.key, doc(a.key))
    store.write_manifest("compare", [Outcome(a, "ok", doc(a.key)), Outcome(b, "pending")], note=1)
    manifest, docs = load_results(tmp_path / "out")
    assert manifest["command"] == "compare" and manifest["note"] == 1 and manifest["cache"] == "../cache"
    assert [p["status"] for p in manifest["points"]] == ["ok", "pending"]
    assert list(docs) == [a.key]
    assert json.loads((tmp_path / "out" / "points.json").read_text()) == manifest


def test_a_seed_axis_is_not_a_second_seed_column():
    a = make_point({"seed": 5}, tiny_table(seed=5))
    header = csv_text([Outcome(a, "ok", doc(a.key))]).splitlines()[0].split(",")
    assert header.count("seed") == 1 and header[0] == "seed"
