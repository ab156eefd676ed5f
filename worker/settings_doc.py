"""The README's settings table, printed from the declarations in ``worker.settings_table``.

``python -m worker.settings_doc`` prints it; paste the output over the table under "## Settings"
in README.md. ``tests/fast/test_settings.py`` fails until the two agree. (A module of its own:
nothing imports it at start-up, so ``python -m`` runs it without a second import.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from worker.settings_table import SETTINGS, Setting, show


def settings_table_markdown(settings: Sequence[Setting] = SETTINGS) -> str:
    """The Markdown table of ``settings``: variable, default, accepted values, meaning."""
    lines = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for setting in settings:
        cells = (_variable(setting), _default(setting), _accepted(setting), setting.help)
        # A bare '|' would end the cell early, even inside backticks.
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _variable(setting: Setting) -> str:
    if setting.file_variable:
        return f"`{setting.variable}` / `{setting.file_variable}`"
    return f"`{setting.variable}`"


def _default(setting: Setting) -> str:
    if setting.default_from:
        return f"`{setting.default_from}`"
    if setting.default is None:
        return "unset"
    return f"`{show(setting.default)}`" + (f" {setting.unit}" if setting.unit else "")


def _accepted(setting: Setting) -> str:
    if setting.rule:
        return setting.rule
    if setting.choices:
        return ", ".join(f"`{choice}`" for choice in setting.choices)
    if setting.minimum is not None:
        number = "a whole number" if setting.kind is int else "a number"
        unit = f" {setting.unit}" if setting.unit else ""
        return f"{number} ≥ {show(setting.minimum)}{unit}"
    if setting.file_variable:
        return "the value, or a file holding it (not both)"
    return "any text"


if __name__ == "__main__":
    sys.stdout.write(settings_table_markdown())
