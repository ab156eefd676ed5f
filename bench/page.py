"""``bash bench/run --write``: docs/benchmarks.md shows the current figures only.

The page is three parts. Its opening (what the benchmarks are, how to run them) and its
``## Method`` section onwards are prose, kept as written. Between them, ``## Current figures``
is written by a full run: the machine's facts, then one table with each row's figure from the
run before beside it (read back from the page being replaced). Older runs are in git.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.measure import Result

CURRENT = "## Current figures"
METHOD = "## Method"
_ROW = re.compile(r"^\| (?P<cells>.+) \|$")


def _cells(line: str) -> list[str] | None:
    match = _ROW.match(line)
    if not match:
        return None
    # A cell may hold an escaped pipe (\|): split on the others only.
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", match["cells"])]


def previous_figures(page: str) -> tuple[dict[tuple[str, str], str], str]:
    """The current table of ``page``: each (benchmark, case)'s result, and which run it was
    (``<git rev>, <date>``); empty when the page has no such table."""
    section = page.split(f"\n{CURRENT}\n", 1)[1] if f"\n{CURRENT}\n" in page else ""
    section = section.split(f"\n{METHOD}\n", 1)[0]
    facts = dict(re.findall(r"^- (git rev|date): (.+)$", section, re.MULTILINE))
    figures: dict[tuple[str, str], str] = {}
    header: list[str] | None = None
    for line in section.splitlines():
        cells = _cells(line)
        if cells is None or set("".join(cells)) <= set("-: "):
            continue
        if header is None:
            header = cells
            continue
        row = dict(zip(header, cells, strict=False))
        figures[(row.get("benchmark", ""), row.get("case", ""))] = row.get("result", "")
    run = ", ".join(v for v in (facts.get("git rev", "").split(" ")[0], facts.get("date")) if v)
    return figures, run


def render_current(
    facts: dict[str, str],
    results: Sequence[Result],
    previous: dict[tuple[str, str], str],
    previous_run: str,
    command: str,
) -> str:
    """The ``## Current figures`` section."""
    lines = [CURRENT, "", f"Written by `{command}`; older runs are in git's history.", ""]
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    before = f"previous run ({previous_run})" if previous_run else "previous run"
    lines += [
        "",
        f"| benchmark | case | N | result | {before} | target | verdict |",
        "|---|---|---:|---|---|---|---|",
    ]
    for row in results:
        earlier = previous.get((row.benchmark, row.case), "(new)" if previous else "-")
        cells = (row.benchmark, row.case, row.n, row.result, earlier, row.target, row.verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write(path: Path, facts: dict[str, str], results: Sequence[Result], command: str) -> None:
    """Replace the current figures in the page at ``path``, keeping its prose."""
    page = path.read_text(encoding="utf-8")
    if f"\n{METHOD}\n" not in page:
        raise SystemExit(f"{path} has no '{METHOD}' section: nothing to keep the figures before")
    opening = page.split(f"\n{CURRENT}\n", 1)[0] if f"\n{CURRENT}\n" in page else None
    if opening is None:  # the page before it was generated: its opening ends at the first run
        opening = re.split(r"\n## ", page, maxsplit=1)[0]
    method = page.split(f"\n{METHOD}\n", 1)[1]
    previous, previous_run = previous_figures(page)
    current = render_current(facts, results, previous, previous_run, command)
    path.write_text(f"{opening.rstrip()}\n\n{current}\n{METHOD}\n{method}", encoding="utf-8")
