"""The layout table (docs/developing.md) matches the tree: every path in it exists, and every
module of the project's packages has its line (itself, or its whole package); and no module
grows past 400 lines."""

from __future__ import annotations

import re

from tests.conftest import ROOT

PACKAGES = ("worker", "api_hooks", "influxdb3_standin", "harness", "bench", "locations_client")


def layout_paths() -> set[str]:
    readme = (ROOT / "docs" / "developing.md").read_text(encoding="utf-8")
    section = readme.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {path for cell in cells for path in re.findall(r"`([^`]+)`", cell)}


def test_every_path_in_the_layout_table_exists():
    missing = sorted(p for p in layout_paths() if not (ROOT / p).exists())
    assert not missing, f"docs/developing.md's layout names paths that do not exist: {missing}"


def test_every_module_has_its_line_in_the_layout_table():
    paths = layout_paths()
    unlisted = []
    for package in PACKAGES:
        if f"{package}/" in paths:
            continue
        for module in sorted((ROOT / package).glob("*.py")):
            if str(module.relative_to(ROOT)) not in paths:
                unlisted.append(str(module.relative_to(ROOT)))
    assert not unlisted, f"modules missing from the layout table (docs/developing.md): {unlisted}"


def test_no_module_outside_tests_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for package in (*PACKAGES, "migrations")
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, f"split these modules by concern: {long}"
