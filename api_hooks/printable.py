"""Text fit to show an operator: nothing in it acts on a terminal or reorders what is shown.

Tenant names come from the UI's own inserts (never through our validation), database names
from servers, errors from anywhere: ESC and OSC sequences would drive the operator's terminal,
and bidi overrides make a page or a table show text in an order that is not its own. Each such
character is shown as its escape (``\\u202e``) instead - visible, and nothing silently dropped,
since operators copy these names into commands.
"""

from __future__ import annotations


def printable(text: str, keep: str = "") -> str:
    """``text`` with every control, format (bidi included) and separator character escaped,
    but those in ``keep`` (a page keeps its line breaks; a table row cannot)."""
    if text.isprintable():
        return text  # the common case, at C speed
    return "".join(ch if ch.isprintable() or ch in keep else f"\\u{ord(ch):04x}" for ch in text)
