"""The decision file `simulate --decisions` writes, and `fairbatch explain`'s story and errors."""

from __future__ import annotations

import json

import pytest

from benchmarks.main import main


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.decisions.jsonl"
    assert main(["simulate", "--requests", "80", "--policy", "vtc", "--seed", "4", "--load", "3",
                 "--decisions", str(path)]) == 0
    return path


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_file_holds_the_run_its_decisions_and_its_requests(run_file):
    lines = rows(run_file)
    assert lines[0]["kind"] == "run" and lines[0]["policy"] == "vtc" and lines[0]["tenants"]
    kinds = [row["kind"] for row in lines]
    assert kinds.count("request") == 80 and kinds[-80:] == ["request"] * 80
    admits = [row for row in lines if row["kind"] == "admit"]
    assert admits and all("counter" in c["keys"] for a in admits for c in a["candidates"])
    assert all(any(c["id"] == a["chosen"]["id"] for c in a["candidates"]) for a in admits)
    assert [a["time"] for a in admits] == sorted(a["time"] for a in admits)


def test_explain_tells_a_request_its_story_in_plain_words(run_file, capsys):
    requests = [row for row in rows(run_file) if row["kind"] == "request" and row["finish"] is not None]
    slowest = max(requests, key=lambda r: r["first_token"] - r["arrival"])
    assert main(["explain", str(run_file), str(slowest["id"])]) == 0
    story = capsys.readouterr().out
    assert story.startswith(f"request {slowest['id']} of tenant {slowest['tenant']}")
    assert f"arrived at {slowest['arrival']:.3f} s" in story
    assert "admitted at" in story and "counter" in story and "first token at" in story
    assert "finished at" in story and "service" in story


def test_explain_reads_a_folder_with_one_decision_file(run_file, capsys):
    assert main(["explain", str(run_file.parent), "0"]) == 0
    assert capsys.readouterr().out.startswith("request 0 of tenant")


@pytest.mark.parametrize("request_id,message", [
    ("999", "REQUEST_ID: no request '999' in"), ("x", "allowed: the ids of its 80 requests (0 to 79)")])
def test_an_unknown_request_is_a_named_error(run_file, request_id, message, capsys):
    assert main(["explain", str(run_file), request_id]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_run_that_is_not_a_decision_file_is_a_named_error(tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text('{"summary": 1}\n')
    for run, message in ((tmp_path / "missing.jsonl", "does not exist"), (other, "is not a decision file"),
                         (tmp_path, "holds 0 *.decisions.jsonl files")):
        assert main(["explain", str(run), "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fairbatch: error: RUN:") and message in err
