"""The report's timeline figure: a window of a run's trace as a picture, and its errors."""

from __future__ import annotations

import pytest

from benchmarks.main import main
from benchmarks.report import read_trace, timeline_section
from scheduler.errors import ConfigError


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "run.trace.json"
    assert main(["simulate", "--requests", "60", "--seed", "3", "--trace", str(path)]) == 0
    return path


def test_the_trace_reads_back_as_steps_workers_and_tenants(trace):
    steps, workers, tenants = read_trace(trace)
    assert steps and workers == [0, 1] and tenants[0] == "enterprise"
    assert [s["ts"] for s in steps] == sorted(s["ts"] for s in steps)


def test_a_window_of_the_trace_is_drawn(trace, tmp_path):
    pytest.importorskip("matplotlib")
    text = timeline_section(trace, (1.0, 3.0), tmp_path / "figures", tmp_path)
    assert text.startswith("## Timeline: run.trace.json, 1.00 to 3.00 s")
    assert (tmp_path / "figures" / "run.trace-timeline.png").stat().st_size > 1000


def test_a_window_outside_the_trace_or_a_file_that_is_not_one_is_a_named_error(trace, tmp_path):
    with pytest.raises(ConfigError, match="--timeline-window: 900:901 is outside the trace's steps"):
        timeline_section(trace, (900.0, 901.0), tmp_path, tmp_path)
    other = tmp_path / "x.json"
    other.write_text("[]")
    with pytest.raises(ConfigError, match="--timeline: cannot read .*not a trace file"):
        read_trace(other)


def test_the_window_flag_needs_a_timeline(tmp_path, capsys):
    assert main(["bench", "report", str(tmp_path), "--timeline-window", "1:2"]) == 2
    err = capsys.readouterr().err
    assert "--timeline-window: picks the seconds of --timeline TRACE, so it needs it" in err
