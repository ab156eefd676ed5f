"""``python -m worker.settings_doc`` prints docs/settings.md's table from ``Settings``; paste it
over the table (tests/fast/test_settings.py compares them). A module of its own: nothing imports
it at start-up, so ``python -m`` runs it without a second import."""

from __future__ import annotations

import sys
from typing import Literal, get_args, get_origin

from annotated_types import Ge, Le
from pydantic.fields import FieldInfo

from worker.settings import Settings, facts
from worker.settings_rules import show

# Read by `python -m worker flower` and Flower itself, not by Settings (see docs/settings.md).
FLOWER = ("FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH_FILE", "FLOWER_UNAUTHENTICATED_DEV")


def row(field: FieldInfo) -> tuple[str, str, str, str]:
    """A variable (and its file's): its default, accepted values and meaning."""
    doc, unit = facts(field), f" {facts(field)['unit']}".rstrip()
    variable = f"`{field.alias}`" + (f" / `{field.alias}_FILE`" if doc["file"] else "")
    default = "unset" if field.default in (None, ()) else f"`{show(field.default)}`{unit}"
    if doc["default_from"]:
        default = f"`{doc['default_from']}`"
    minimum = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    accepted = doc["accepted"] or "any text"
    if get_origin(field.annotation) is Literal:
        accepted = ", ".join(f"`{choice}`" for choice in get_args(field.annotation))
    elif minimum is not None:
        number = "a whole number" if field.annotation is int else "a number"
        accepted = f"{number} ≥ {show(minimum)}{unit}"
        if (most := next((m.le for m in field.metadata if isinstance(m, Le)), None)) is not None:
            accepted += f", ≤ {show(most)}"
    elif doc["file"] and not doc["accepted"]:
        accepted = "the value, or a file holding it (not both)"
    return variable, default, accepted, " ".join(str(field.description).split())


def variables() -> set[str]:
    """Every variable docs/settings.md documents, ``*_FILE`` twins included."""
    fields = Settings.model_fields.values()
    names = {str(f.alias) for f in fields} | {f"{f.alias}_FILE" for f in fields if facts(f)["file"]}
    return names | set(FLOWER)


def settings_table_markdown() -> str:
    """The Markdown table of every variable: variable, default, accepted values, meaning."""
    lines = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for cells in map(row, Settings.model_fields.values()):
        # A bare '|' would end the cell early, even inside backticks.
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_table_markdown())
