"""The few SQL shapes the stand-in answers, and the row encodings of the query API.

Not a SQL engine: the worker only counts rows, reads them back and lists a table's columns, so
anything beyond ``COUNT(*)``, ``SELECT *``, ``information_schema.columns`` of one table and the
list of tables (``information_schema.tables``) is
refused with a 400 that names the stand-in, rather than answered wrongly. Like Core, queries
apply the database's retention period: older points are hidden (still stored), the schema is not.
"""

from __future__ import annotations

import json
import re

from influxdb3_standin.catalog import Database, table_rows
from influxdb3_standin.messages import ApiError, Response, json_ok, text_error

_SQL = re.compile(
    r"""^\s*SELECT\s+
        (?:(?P<count>COUNT\s*\(\s*\*\s*\)(?:\s+AS\s+(?P<alias>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*))?)
          |(?P<star>\*))
        \s+FROM\s+(?P<table>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)
        (?:\s+ORDER\s+BY\s+(?P<order>time|"time")(?:\s+(?P<direction>ASC|DESC))?)?
        (?:\s+LIMIT\s+(?P<limit>\d+))?
        \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_COLUMNS_SQL = re.compile(
    r"""^\s*SELECT\s+column_name\s+FROM\s+information_schema\.columns\s+
        WHERE\s+table_schema\s*=\s*'iox'\s+AND\s+table_name\s*=\s*'(?P<table>[^']*)'
        \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_TABLES_SQL = re.compile(
    r"""^\s*SELECT\s+table_name\s+FROM\s+information_schema\.tables\s+
        WHERE\s+table_schema\s*=\s*'iox'(?:\s+LIMIT\s+(?P<limit>\d+))?
        \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_SUPPORTED_SQL = (
    "SELECT COUNT(*) [AS alias] FROM t, SELECT * FROM t [ORDER BY time [ASC|DESC]] [LIMIT n], "
    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'iox' AND "
    "table_name = 't', SELECT table_name FROM information_schema.tables WHERE table_schema = "
    "'iox' [LIMIT n]"
)


def run_sql(database: Database, sql: str, now_ns: int) -> list[dict[str, object]]:
    """The result rows of one supported statement; a 400 for anything else or a missing table.
    ``now_ns``: the server's clock, from which the retention period hides older points."""
    columns_of = _COLUMNS_SQL.match(sql)
    if columns_of is not None:  # the schema: no retention, [] for a table not there
        found = database.tables.get(columns_of.group("table"))
        names = sorted(found.columns) if found is not None else []
        return [{"column_name": name} for name in [*names, "time"]] if names else []
    tables = _TABLES_SQL.match(sql)
    if tables is not None:  # the database's tables, made by writes (a create makes none)
        listed: list[dict[str, object]] = [{"table_name": n} for n in sorted(database.tables)]
        return listed if tables.group("limit") is None else listed[: int(tables.group("limit"))]
    match = _SQL.match(sql)
    if match is None:
        raise ApiError(
            text_error(
                400,
                f"the InfluxDB 3 stand-in does not support this SQL: {sql.strip()!r} "
                f"(supported: {_SUPPORTED_SQL})",
            )
        )
    table_name = _sql_identifier(match.group("table"))
    table = database.tables.get(table_name)
    if table is None:
        raise ApiError(
            text_error(400, f"Error during planning: table 'public.iox.{table_name}' not found")
        )
    limit = int(match.group("limit")) if match.group("limit") is not None else None
    oldest = (
        None
        if database.retention_seconds is None
        else now_ns - int(database.retention_seconds * 1_000_000_000)
    )
    rows: list[dict[str, object]]
    if match.group("count"):
        alias = match.group("alias")
        # DataFusion names an unaliased COUNT(*) column "count(*)".
        column = _sql_identifier(alias) if alias else "count(*)"
        rows = [{column: sum(1 for key in table.points if oldest is None or key[1] >= oldest)}]
    else:
        rows = table_rows(table, oldest)
        if (match.group("direction") or "").upper() == "DESC":
            rows.reverse()
    return rows if limit is None else rows[:limit]


def encode_rows(rows: list[dict[str, object]], format_name: str) -> Response:
    """Rows as the query and list APIs send them: json, jsonl or csv."""
    if format_name == "json":
        return json_ok(rows)
    if format_name == "jsonl":
        text = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
        return Response(200, text.encode(), "application/jsonl")
    if format_name == "csv":
        columns: list[str] = []
        for row in rows:
            columns.extend(name for name in row if name not in columns)
        lines = [",".join(columns)] if columns else []
        lines += [",".join(_csv_cell(row.get(name)) for name in columns) for row in rows]
        return Response(200, "".join(line + "\n" for line in lines).encode(), "text/csv")
    raise ApiError(
        text_error(400, f"the InfluxDB 3 stand-in does not support format={format_name}")
    )


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if any(char in text for char in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _sql_identifier(token: str) -> str:
    # DataFusion: quoted identifiers keep their case, unquoted ones are lowercased.
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()
