"""A small line-protocol parser: lines to typed points, bad lines to Core's error entries.

Kept apart from storage so that what a line *says* (measurement, tags, typed fields, timestamp)
is decided before the catalog checks whether it fits the schema already stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FieldValue = int | float | bool | str

# Timestamp multipliers by the write API's ``precision``; None: guess from the magnitude.
PRECISION_NS: dict[str, int | None] = {
    "auto": None,
    "ns": 1,
    "nanosecond": 1,
    "us": 1_000,
    "microsecond": 1_000,
    "ms": 1_000_000,
    "millisecond": 1_000_000,
    "s": 1_000_000_000,
    "second": 1_000_000_000,
}

_INTEGER = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BOOL_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_BOOL_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


@dataclass
class Point:
    line_number: int
    original_line: str
    table: str
    tags: dict[str, str]
    fields: dict[str, tuple[str, FieldValue]]
    timestamp: int | None


class LineError(Exception):
    pass


def guess_precision_ns(timestamp: int) -> int:
    """Core's guess for precision=auto, by magnitude."""
    magnitude = abs(timestamp) // 1_000_000_000
    if magnitude < 5:
        return 1_000_000_000
    if magnitude < 5_000:
        return 1_000_000
    if magnitude < 5_000_000:
        return 1_000
    return 1


def line_error(line_number: int, line: str, message: str) -> dict[str, object]:
    """One entry of the ``data`` list of a partial-write answer."""
    return {"original_line": line, "line_number": line_number, "error_message": message}


def parse_line_protocol(body: str) -> tuple[list[Point], list[dict[str, object]]]:
    """The good lines as points and the bad ones as error entries; blanks and comments skipped."""
    points: list[Point] = []
    errors: list[dict[str, object]] = []
    for line_number, raw_line in enumerate(body.split("\n"), start=1):
        line = raw_line.rstrip("\r").rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            points.append(_parse_line(line_number, line))
        except LineError as exc:
            errors.append(line_error(line_number, line, str(exc)))
    return points, errors


def _split_unescaped(text: str, separator: str, *, quotes: bool) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if quotes and char == '"':
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    if in_quotes:
        raise LineError("Unterminated string field value")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= \\\"])", r"\1", text)


def _parse_field_value(raw: str) -> tuple[str, FieldValue]:
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        return "string", re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    if raw in _BOOL_TRUE:
        return "boolean", True
    if raw in _BOOL_FALSE:
        return "boolean", False
    if raw.endswith("i") and _INTEGER.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if not -(2**63) <= value < 2**63:
            raise LineError(f"Integer value out of range: {raw}")
        return "integer", value
    if raw.endswith("u") and _INTEGER.fullmatch(raw[:-1]) and not raw.startswith("-"):
        value = int(raw[:-1])
        if value >= 2**64:
            raise LineError(f"Unsigned integer value out of range: {raw}")
        return "uinteger", value
    if _FLOAT.fullmatch(raw):
        return "float", float(raw)
    raise LineError(f"Invalid field value: {raw!r}")


def _parse_series(head: str) -> tuple[str, dict[str, str]]:
    """Measurement and tags of `measurement[,tag=value...]`."""
    head_parts = _split_unescaped(head, ",", quotes=False)
    table = _unescape(head_parts[0])
    if not table:
        raise LineError("Invalid measurement was provided")
    tags: dict[str, str] = {}
    for raw_tag in head_parts[1:]:
        key_value = _split_unescaped(raw_tag, "=", quotes=False)
        if len(key_value) != 2 or not key_value[0] or not key_value[1]:
            raise LineError(f"Invalid tag set: {raw_tag!r}")
        tags[_unescape(key_value[0])] = _unescape(key_value[1])
    return table, tags


def _parse_fields(text: str) -> dict[str, tuple[str, FieldValue]]:
    """Typed values of `field=value[,field=value...]`."""
    fields: dict[str, tuple[str, FieldValue]] = {}
    for raw_field in _split_unescaped(text, ",", quotes=True):
        key_value = _split_unescaped(raw_field, "=", quotes=True)
        if len(key_value) < 2 or not key_value[0]:
            raise LineError(f"Invalid field: {raw_field!r}")
        key = _unescape(key_value[0])
        raw_value = raw_field[len(key_value[0]) + 1 :]
        if not raw_value:
            raise LineError(f"Missing value for field {key!r}")
        if key in fields:
            raise LineError(f"Duplicate field {key!r}")
        fields[key] = _parse_field_value(raw_value)
    return fields


def _parse_line(line_number: int, line: str) -> Point:
    head_and_rest = _split_unescaped(line, " ", quotes=False)
    if len(head_and_rest) < 2:
        raise LineError("No fields were provided")
    head = head_and_rest[0]
    rest = line[len(head) + 1 :]
    table, tags = _parse_series(head)
    sections = _split_unescaped(rest, " ", quotes=True)
    if not sections[0]:
        raise LineError("No fields were provided")
    if len(sections) > 2 or (len(sections) == 2 and not sections[1]):
        raise LineError(f"Could not parse entire line. Found trailing content: {rest!r}")
    fields = _parse_fields(sections[0])
    timestamp: int | None = None
    if len(sections) == 2:
        if not _INTEGER.fullmatch(sections[1]):
            raise LineError(f"Unable to parse timestamp: {sections[1]!r}")
        timestamp = int(sections[1])

    for name in (*tags, *fields):
        if name == "time":
            raise LineError("The column name 'time' is reserved")
    both = set(tags) & set(fields)
    if both:
        raise LineError(f"Column {sorted(both)[0]!r} is both a tag and a field")
    return Point(line_number, line, table, tags, fields, timestamp)
