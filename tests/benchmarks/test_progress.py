"""The progress bar goes to stderr, and nowhere when disabled."""

import pytest

from benchmarks.progress import progress_bar


def test_bar_counts_on_stderr_with_an_eta(capsys):
    pytest.importorskip("rich", reason="the bar needs the optional `progress` extra (rich): pip install -e '.[progress]'")
    with progress_bar(2, "points") as bar:
        bar.advance()
        bar.grow(1)
        bar.advance(2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "points" in err and "3/3" in err and "eta" in err


def test_disabled_bar_is_silent(capsys):
    with progress_bar(2, "points", enabled=False) as bar:
        bar.advance(2)
    assert capsys.readouterr() == ("", "")
