"""The trace overhead benchmark runs every mode and reports ratios to "off" (no timing is asserted)."""

from benchmarks.trace_overhead import MODES, SCENARIOS, measure, table
from sim.config import load_config


def test_every_mode_is_measured_and_tabled_against_off():
    config = load_config(SCENARIOS / "noisy_neighbour.toml", {"requests": 40})
    medians = measure(config, repeats=1)
    assert list(medians) == list(MODES) and all(seconds > 0 for seconds in medians.values())
    lines = table(medians).splitlines()
    assert lines[2].split()[0] == "off" and lines[2].split()[-1] == "1.00"
