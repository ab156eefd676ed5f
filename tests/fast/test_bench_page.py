"""``bash bench/run --write``: the benchmarks page shows the current figures, each beside the
run before's, and keeps its prose."""

from __future__ import annotations

from pathlib import Path

from bench import page
from bench.measure import Result
from tests.conftest import ROOT

OPENING = "# Benchmarks\n\nHow to run them.\n"
METHOD = "## Method\n\nHow each is measured.\n"


def result(case: str, figure: str) -> Result:
    return Result("1 · latency", case, "1,000", figure, "p99 < 15 ms", "met")


def test_a_full_run_replaces_the_figures_and_keeps_the_prose(tmp_path: Path):
    # Given a page of appended runs (as before it was generated)
    path = tmp_path / "benchmarks.md"
    appended = "\n## Last full run\n\n| a | b |\n\n### Re-run\n\nstale figures\n\n"
    path.write_text(OPENING + appended + METHOD)
    # When two full runs write it, one after the other
    first = {"date": "2026-12-04 08:00 UTC", "git rev": "abc1234"}
    page.write(path, first, [result("healthy", "p99 9 ms | fast")], "bash bench/run --write")
    second = {"date": "2026-12-05 08:00 UTC", "git rev": "def5678"}
    results = [result("healthy", "p99 8 ms"), result("hanging", "p99 2.01 s")]
    page.write(path, second, results, "bash bench/run --write")
    # Then the page has its opening, the second run beside the first, and its method
    text = path.read_text()
    assert text.startswith(OPENING)
    assert text.endswith(METHOD)
    assert "Re-run" not in text and "stale figures" not in text
    assert "| previous run (abc1234, 2026-12-04 08:00 UTC) |" in text
    assert (
        "| 1 · latency | healthy | 1,000 | p99 8 ms | p99 9 ms \\| fast | p99 < 15 ms | met |"
        in text
    )
    assert "| 1 · latency | hanging | 1,000 | p99 2.01 s | (new) |" in text
    assert text.count(page.CURRENT) == 1


def test_the_committed_page_has_the_sections_the_writer_keeps():
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert f"\n{page.METHOD}\n" in text
