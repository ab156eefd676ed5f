"""The stand-in's data: databases, their tables and points, the database limit, soft deletes.

One place owns the rules that decide whether a database or a point may exist (name checks,
existence before limit, auto-creation on write, schema conflicts), so that the HTTP API and the
test-facing methods of ``StandIn`` cannot drift apart. Nothing here locks: every caller holds the
stand-in's lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from influxdb3_standin.lineprotocol import (
    PRECISION_NS,
    FieldValue,
    Point,
    guess_precision_ns,
    line_error,
)
from influxdb3_standin.messages import (
    MAX_DATABASE_NAME_BYTES,
    MSG_EXISTS,
    MSG_NAME_EMPTY,
    MSG_NAME_INVALID_CHAR,
    MSG_NAME_START,
    MSG_NAME_TOO_LONG,
    ApiError,
    json_error,
    limit_error,
    text_error,
)

INTERNAL_DATABASE = "_internal"

# Retention periods as Core's configure API takes them: one non-negative number and one unit,
# no whitespace, no compound values; "none" means forever (``../shared/influxdb3-api.md``).
_RETENTION_UNITS_SECONDS: dict[str, int] = {
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
_RETENTION_PERIOD = re.compile(r"([0-9]+)(h|d|w|mo|y)")

SeriesKey = tuple[tuple[tuple[str, str], ...], int]


@dataclass
class Table:
    # column name -> "tag" or a field type ("integer", "uinteger", "float", "boolean", "string")
    columns: dict[str, str] = field(default_factory=dict)
    # (sorted tag pairs, time in ns) -> fields; the same series and time overwrite, as in InfluxDB
    points: dict[SeriesKey, dict[str, FieldValue]] = field(default_factory=dict)


@dataclass
class Database:
    name: str
    retention_seconds: float | None = None
    tables: dict[str, Table] = field(default_factory=dict)


def validate_database_name(name: str) -> None:
    """Core's validate_db_name, with the 3.10 length limit."""
    if not name:
        raise ApiError(json_error(400, MSG_NAME_EMPTY))
    if len(name.encode()) > MAX_DATABASE_NAME_BYTES:
        raise ApiError(json_error(400, MSG_NAME_TOO_LONG))
    for position, char in enumerate(name):
        if not char.isascii():
            raise ApiError(json_error(400, MSG_NAME_INVALID_CHAR))
        if position == 0:
            if not char.isalnum():
                raise ApiError(json_error(400, MSG_NAME_START))
        elif not (char.isalnum() or char in "_-"):
            raise ApiError(json_error(400, MSG_NAME_INVALID_CHAR))


def parse_retention_period(text: str) -> float | None:
    """Seconds of a retention period ("30d", "12h", "1w", "3mo", "1y"); None for "none"."""
    if text == "none":
        return None
    match = _RETENTION_PERIOD.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid retention period {text!r}: expected a number and one of h, d, w, mo, y"
        )
    return float(int(match.group(1)) * _RETENTION_UNITS_SECONDS[match.group(2)])


def table_rows(table: Table, oldest_ns: int | None = None) -> list[dict[str, object]]:
    """The rows of a table as SELECT * returns them: by time, then series; time last. With
    ``oldest_ns``, only the points from then on (what a retention period leaves visible)."""
    rows: list[dict[str, object]] = []
    for (tags, timestamp), fields in sorted(
        table.points.items(), key=lambda item: (item[0][1], item[0][0])
    ):
        if oldest_ns is not None and timestamp < oldest_ns:
            continue
        row: dict[str, object] = dict(tags)
        row.update(sorted(fields.items()))
        row["time"] = _format_time(timestamp)
        rows.append(row)
    return rows


def _format_time(nanoseconds: int) -> str:
    """Arrow's rendering of a timestamp without time zone: seconds, then .3/.6/.9 digits."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    base = (datetime(1970, 1, 1) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}"
    return f"{base}.{nanos:09d}"


class Catalog:
    """Active and soft-deleted databases of one server, and its database limit."""

    def __init__(self, limit: int, clock: Callable[[], datetime]) -> None:
        self.limit, self.clock = limit, clock
        self.databases: dict[str, Database] = {}
        self.deleted: dict[str, Database] = {}

    def clear(self) -> None:
        self.databases.clear()
        self.deleted.clear()

    def listed_names(self) -> list[str]:
        """What the list endpoint shows: active databases and _internal, sorted."""
        return sorted([INTERNAL_DATABASE, *self.databases])

    def create(self, name: str, retention_seconds: float | None = None) -> None:
        """Add a database (the name already validated); 409 if it exists, 422 at the limit."""
        # Existence before the limit: an existing name answers 409 even on a full server.
        if name in self.databases:
            raise ApiError(text_error(409, MSG_EXISTS))
        if len(self.databases) >= self.limit:
            raise limit_error(self.limit)
        self.databases[name] = Database(name, retention_seconds)

    def soft_delete(self, name: str) -> None:
        """Rename an active database to NAME-YYYYMMDDTHHMMSS; KeyError if there is none."""
        database = self.databases.pop(name)
        stamp = self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S")
        deleted_name = f"{name}-{stamp}"
        suffix = 1
        while deleted_name in self.deleted:  # two deletes of one name within a second
            suffix += 1
            deleted_name = f"{name}-{stamp}-{suffix}"
        database.name = deleted_name
        self.deleted[deleted_name] = database

    def rows(self, database: str, table: str) -> list[dict[str, object]]:
        found = self.databases.get(database)
        if found is None or table not in found.tables:
            return []
        return table_rows(found.tables[table])

    def write(
        self, name: str, points: list[Point], precision: str, default_time: int
    ) -> list[dict[str, object]]:
        """Store parsed points; error entries for the points the stored schema refuses."""
        errors: list[dict[str, object]] = []
        database = self.databases.get(name)
        if database is None and points:
            # A write to a missing database creates it, and so takes a slot of the limit.
            if len(self.databases) >= self.limit:
                raise limit_error(self.limit)
            database = self.databases[name] = Database(name)
        if database is not None:
            for point in points:
                problem = _store_point(database, point, precision, default_time)
                if problem is not None:
                    errors.append(line_error(point.line_number, point.original_line, problem))
        return errors


def _store_point(database: Database, point: Point, precision: str, default_time: int) -> str | None:
    """Store one point (merging into an existing one); a message if the schema refuses it."""
    table = database.tables.get(point.table)
    columns = table.columns if table is not None else {}
    for tag in point.tags:
        kind = columns.get(tag)
        if kind is not None and kind != "tag":
            return f"Column {tag!r} is a {kind} field, not a tag"
    for name, (kind, _value) in point.fields.items():
        existing = columns.get(name)
        if existing is not None and existing != kind:
            return (
                f"invalid field value in line protocol for field '{name}' on line "
                f"{point.line_number}: expected type {existing}, but got {kind}"
            )
    if table is None:
        table = database.tables[point.table] = Table()
    for tag in point.tags:
        table.columns[tag] = "tag"
    for name, (kind, _value) in point.fields.items():
        table.columns[name] = kind

    if point.timestamp is None:
        timestamp = default_time
    else:
        multiplier = PRECISION_NS[precision]
        if multiplier is None:
            multiplier = guess_precision_ns(point.timestamp)
        timestamp = point.timestamp * multiplier
    key: SeriesKey = (tuple(sorted(point.tags.items())), timestamp)
    stored = table.points.setdefault(key, {})
    stored.update({name: value for name, (_kind, value) in point.fields.items()})
    return None
