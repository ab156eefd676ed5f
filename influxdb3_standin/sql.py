"""The few SQL shapes the stand-in answers, and the row encodings of the query API.

Not a SQL engine: the worker only counts rows and reads them back, so anything beyond
``COUNT(*)`` and ``SELECT *`` is refused with a 400 that names the stand-in, rather than answered
wrongly.
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
_SUPPORTED_SQL = (
    "SELECT COUNT(*) [AS alias] FROM t, SELECT * FROM t [ORDER BY time [ASC|DESC]] [LIMIT n]"
)


def run_sql(database: Database, sql: str) -> list[dict[str, object]]:
    """The result rows of one supported statement; a 400 for anything else or a missing table."""
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
    rows: list[dict[str, object]]
    if match.group("count"):
        alias = match.group("alias")
        # DataFusion names an unaliased COUNT(*) column "count(*)".
        column = _sql_identifier(alias) if alias else "count(*)"
        rows = [{column: len(table.points)}]
    else:
        rows = table_rows(table)
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
