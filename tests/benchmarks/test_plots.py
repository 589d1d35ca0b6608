"""Every figure is written as a PNG from run documents, sized by what it shows."""

import pytest

from bench_helpers import tiny_table
from benchmarks import plots
from benchmarks.points import run_point, with_overrides

matplotlib = pytest.importorskip("matplotlib", reason="plots need the optional `plot` extra (matplotlib): pip install -e '.[plot]'")
from matplotlib.image import imread  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    return {load: [(p, run_point(with_overrides(tiny_table(), {"scheduler.policy": p, "load": load})))
                   for p in ("fcfs", "vtc")] for load in (1.0, 12.0)}


def size(path):
    return imread(path).shape[:2]


def test_figures_are_pngs_laid_out_by_loads_and_series(tmp_path, rows):
    one = plots.cdf_figure({1.0: rows[1.0]}, tmp_path / "cdf1.png")
    two = plots.cdf_figure(rows, tmp_path / "cdf2.png", "tiny")
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (h1, w1), (h2, w2) = size(one), size(two)
    assert h1 == h2 and w2 == 2 * w1  # a column per load
    by_series = {p: [(load, dict(rows[load])[p]) for load in rows] for p in ("fcfs", "vtc")}
    for path in (plots.load_figure(by_series, tmp_path / "load.png"),
                 plots.service_figure(rows[12.0], tmp_path / "service.png"),
                 plots.workers_figure(rows[12.0], tmp_path / "workers.png"),
                 plots.capacity_figure({"fcfs": {"at_capacity": {"offered_request_rate": 3.0}}, "vtc": {}},
                                       tmp_path / "capacity.png")):
        assert path.stat().st_size > 5_000
    assert size(tmp_path / "workers.png") == size(tmp_path / "service.png")  # a panel per series
    four = plots.service_figure(rows[12.0] * 2, tmp_path / "service4.png")
    assert size(four)[0] == 2 * size(tmp_path / "service.png")[0]  # at most three panels a row


def test_colours_are_stable_per_series_name():
    first = plots.colours(["fcfs", "vtc"])
    assert plots.colours(["fcfs", "vtc", "drr"])["vtc"] == first["vtc"] != first["fcfs"]
