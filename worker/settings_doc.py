"""The settings table of docs/settings.md, printed from the ``Settings`` model.

``python -m worker.settings_doc`` prints it; paste the output over the table in
docs/settings.md. ``tests/fast/test_settings.py`` fails until the two agree. (A module of its own:
nothing imports it at start-up, so ``python -m`` runs it without a second import.)
"""

from __future__ import annotations

import sys
from typing import Literal, get_args, get_origin

from annotated_types import Ge
from pydantic.fields import FieldInfo

from worker.settings import Settings, facts
from worker.settings_rules import show

# Read by `python -m worker flower` and by Flower itself, not by Settings: name, accepted, help.
ELSEWHERE = [
    (
        "FLOWER_BASIC_AUTH",
        "`user:password`",
        "`python -m worker flower` refuses to start without it",
    ),
    (
        "FLOWER_BASIC_AUTH_FILE",
        "a file holding `user:password`",
        "instead of `FLOWER_BASIC_AUTH` (not both)",
    ),
    ("FLOWER_UNAUTHENTICATED_DEV", "`1`", "allows Flower without auth (development only)"),
]


def rows() -> list[tuple[str, str, str, str]]:
    """Each variable: its name (and its file's), default, accepted values, meaning."""
    described = [_row(field) for field in Settings.model_fields.values()]
    return described + [
        (f"`{name}`", "unset", accepted, help) for name, accepted, help in ELSEWHERE
    ]


def _row(field: FieldInfo) -> tuple[str, str, str, str]:
    doc, unit = facts(field), f" {facts(field)['unit']}".rstrip()
    variable = f"`{field.alias}`" + (f" / `{field.alias}_FILE`" if doc["file"] else "")
    default = "unset" if field.default in (None, ()) else f"`{show(field.default)}`{unit}"
    if doc["default_from"]:
        default = f"`{doc['default_from']}`"
    minimum = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    if doc["accepted"]:
        accepted = doc["accepted"]
    elif get_origin(field.annotation) is Literal:
        accepted = ", ".join(f"`{choice}`" for choice in get_args(field.annotation))
    elif minimum is not None:
        number = "a whole number" if field.annotation is int else "a number"
        accepted = f"{number} ≥ {show(minimum)}{unit}"
    else:
        accepted = "the value, or a file holding it (not both)" if doc["file"] else "any text"
    return variable, default, accepted, " ".join(str(field.description).split())


def variables() -> set[str]:
    """Every variable docs/settings.md documents, ``*_FILE`` twins included."""
    return {name.strip("` ") for row in rows() for name in row[0].split(" / ")}


def settings_table_markdown() -> str:
    """The Markdown table of every variable: variable, default, accepted values, meaning."""
    lines = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for cells in rows():
        # A bare '|' would end the cell early, even inside backticks.
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_table_markdown())
