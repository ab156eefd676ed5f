"""Text fit to show an operator: nothing in it acts on a terminal or reorders what is shown.

Tenant names come from the UI's own inserts (never through our validation), database names
from servers, errors from anywhere: ESC and OSC sequences would drive the operator's terminal,
and bidi overrides make a page or a table show text in an order that is not its own. Each such
character is shown as its escape (``\\u202e``) instead - visible, and nothing silently dropped,
since operators copy these names into commands. Every CLI table is printed by
:func:`print_table`, every cell escaped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def printable(text: str, keep: str = "") -> str:
    """``text`` with every control, format (bidi included) and separator character escaped,
    but those in ``keep`` (a page keeps its line breaks; a table row cannot)."""
    if text.isprintable():
        return text  # the common case, at C speed
    return "".join(ch if ch.isprintable() or ch in keep else f"\\u{ord(ch):04x}" for ch in text)


def print_json(value: object) -> None:
    """``value`` as indented JSON (which escapes what a terminal would act on)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: list[str], noun: str = "tenant"
) -> None:
    """``rows`` as a table of ``columns``, and a count of them (``noun``); every cell escaped:
    names and errors are untrusted text, and this is a terminal."""
    cells = [[("-" if row[c] is None else printable(str(row[c]))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    sys.stdout.write("\n".join([*lines, f"({len(rows)} {noun}(s))"]) + "\n")
