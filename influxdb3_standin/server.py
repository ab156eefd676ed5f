"""A stand-in for the InfluxDB 3 Core HTTP API. It is NOT InfluxDB.

InfluxDB 3 Core cannot be installed on our test machines, so the test suite and local runs talk to
this small in-memory HTTP server instead. It follows the contract written down in
``../shared/influxdb3-api.md`` (status codes and bodies, including the mix of plain-text and JSON
error bodies sent without a ``Content-Type``), and nothing more: a handful of SQL shapes, a simple
line-protocol parser, no persistence. Production and ``docker-compose.yml`` use the real
``influxdb:3-core`` image.

On top of the API it offers switches that real servers only show on bad days (latency, 5xx,
hanging requests, connection resets, outages), so that retry and failure handling can be tested
over real HTTP. Everything is kept in memory and lost when the process ends.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import random
import re
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""Core's default ``--max-http-request-size`` (10 MiB)."""

INTERNAL_DATABASE = "_internal"
MAX_DATABASE_NAME_BYTES = 511
PRODUCT_NAME = "InfluxDB 3 Core"
VERSION = "3.10.0-standin"
REVISION = "standin"

# Bodies beyond this are not even drained: answer 413 and drop the connection.
_MAX_DRAIN_BYTES = 4 * MAX_REQUEST_BYTES
# How long stop() waits for handler threads to notice their connection is gone.
_STOP_DRAIN_SECONDS = 2.0
# An idle keep-alive connection is closed after this long.
_IDLE_CONNECTION_SECONDS = 60.0

_MSG_UNAUTHENTICATED = "the request was not authenticated"
_MSG_MALFORMED_AUTH = (
    "Authorization header was malformed, the request was not in the form of "
    "'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and Basic"
)
_MSG_NAME_INVALID_CHAR = (
    "invalid character in database or rp name: must be ASCII, "
    "containing only letters, numbers, underscores, or hyphens"
)
_MSG_NAME_START = "db name did not start with a number or letter"
_MSG_NAME_EMPTY = "db name cannot be empty"
_MSG_NAME_TOO_LONG = f"db name too long: max {MAX_DATABASE_NAME_BYTES}"
_MSG_EXISTS = "attempted to create a resource that already exists"
_MSG_CONTENT_TYPE = "unacceptable content-type, expected: application/json"
_MSG_EMPTY_WRITE = "incoming write was empty"
_MSG_TOO_LARGE = f"max request size ({MAX_REQUEST_BYTES} bytes) exceeded"
_MSG_PARTIAL_WRITE = "partial write of line protocol occurred"

_FAULT_ERRORS = (
    (500, "internal error: WAL buffer full"),
    (503, "service unavailable: the write buffer is busy, try again later"),
)

_PRECISION_NS: dict[str, int | None] = {
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

_INTEGER = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BOOL_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_BOOL_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
)

FieldValue = int | float | bool | str
_Fate = Literal["ok", "error", "reset", "hang", "drop"]


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class _ApiError(Exception):
    """An error answer; raised anywhere below a route and turned into a response."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _text(status: int, message: str) -> _Response:
    # Core sends its plain-text error bodies without a Content-Type.
    return _Response(status, message.encode())


def _json_error(
    status: int, message: str, data: object = None, *, compact: bool = True
) -> _Response:
    # Most JSON errors are serialised by serde (compact); the auth errors are hand-formatted
    # `{"error": "..."}` strings in Core. Either way, no Content-Type.
    payload: dict[str, object] = {"error": message}
    if data is not None:
        payload["data"] = data
    separators = (",", ":") if compact else (", ", ": ")
    return _Response(status, json.dumps(payload, separators=separators).encode())


def _json_ok(payload: object) -> _Response:
    return _Response(200, json.dumps(payload, separators=(",", ":")).encode(), "application/json")


def _limit_error(limit: int) -> _ApiError:
    return _ApiError(
        _json_error(422, f"Adding a new database would exceed limit of {limit} databases")
    )


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------

_SeriesKey = tuple[tuple[tuple[str, str], ...], int]


@dataclass
class _Table:
    # column name -> "tag" or a field type ("integer", "uinteger", "float", "boolean", "string")
    columns: dict[str, str] = field(default_factory=dict)
    # (sorted tag pairs, time in ns) -> fields; the same series and time overwrite, as in InfluxDB
    points: dict[_SeriesKey, dict[str, FieldValue]] = field(default_factory=dict)


@dataclass
class _Database:
    name: str
    retention_seconds: float | None = None
    tables: dict[str, _Table] = field(default_factory=dict)


@dataclass
class _Point:
    line_number: int
    original_line: str
    table: str
    tags: dict[str, str]
    fields: dict[str, tuple[str, FieldValue]]
    timestamp: int | None


class _LineError(Exception):
    pass


@dataclass
class _Switches:
    latency: float = 0.0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    hang: bool = False


# --------------------------------------------------------------------------------------------
# Small parsers
# --------------------------------------------------------------------------------------------


def _validate_database_name(name: str) -> None:
    """Core's validate_db_name, with the 3.10 length limit."""
    if not name:
        raise _ApiError(_json_error(400, _MSG_NAME_EMPTY))
    if len(name.encode()) > MAX_DATABASE_NAME_BYTES:
        raise _ApiError(_json_error(400, _MSG_NAME_TOO_LONG))
    for position, char in enumerate(name):
        if not char.isascii():
            raise _ApiError(_json_error(400, _MSG_NAME_INVALID_CHAR))
        if position == 0:
            if not char.isalnum():
                raise _ApiError(_json_error(400, _MSG_NAME_START))
        elif not (char.isalnum() or char in "_-"):
            raise _ApiError(_json_error(400, _MSG_NAME_INVALID_CHAR))


def _parse_retention_period(text: str) -> float | None:
    """Seconds of a retention period ("30d", "12h", "1w", "3mo", "1y"); None for "none"."""
    if text == "none":
        return None
    match = _RETENTION_PERIOD.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid retention period {text!r}: expected a number and one of h, d, w, mo, y"
        )
    return float(int(match.group(1)) * _RETENTION_UNITS_SECONDS[match.group(2)])


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


def _guess_precision_ns(timestamp: int) -> int:
    """Core's guess for precision=auto, by magnitude."""
    magnitude = abs(timestamp) // 1_000_000_000
    if magnitude < 5:
        return 1_000_000_000
    if magnitude < 5_000:
        return 1_000_000
    if magnitude < 5_000_000:
        return 1_000
    return 1


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
        raise _LineError("Unterminated string field value")
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
            raise _LineError(f"Integer value out of range: {raw}")
        return "integer", value
    if raw.endswith("u") and _INTEGER.fullmatch(raw[:-1]) and not raw.startswith("-"):
        value = int(raw[:-1])
        if value >= 2**64:
            raise _LineError(f"Unsigned integer value out of range: {raw}")
        return "uinteger", value
    if _FLOAT.fullmatch(raw):
        return "float", float(raw)
    raise _LineError(f"Invalid field value: {raw!r}")


def _parse_series(head: str) -> tuple[str, dict[str, str]]:
    """Measurement and tags of `measurement[,tag=value...]`."""
    head_parts = _split_unescaped(head, ",", quotes=False)
    table = _unescape(head_parts[0])
    if not table:
        raise _LineError("Invalid measurement was provided")
    tags: dict[str, str] = {}
    for raw_tag in head_parts[1:]:
        key_value = _split_unescaped(raw_tag, "=", quotes=False)
        if len(key_value) != 2 or not key_value[0] or not key_value[1]:
            raise _LineError(f"Invalid tag set: {raw_tag!r}")
        tags[_unescape(key_value[0])] = _unescape(key_value[1])
    return table, tags


def _parse_fields(text: str) -> dict[str, tuple[str, FieldValue]]:
    """Typed values of `field=value[,field=value...]`."""
    fields: dict[str, tuple[str, FieldValue]] = {}
    for raw_field in _split_unescaped(text, ",", quotes=True):
        key_value = _split_unescaped(raw_field, "=", quotes=True)
        if len(key_value) < 2 or not key_value[0]:
            raise _LineError(f"Invalid field: {raw_field!r}")
        key = _unescape(key_value[0])
        raw_value = raw_field[len(key_value[0]) + 1 :]
        if not raw_value:
            raise _LineError(f"Missing value for field {key!r}")
        if key in fields:
            raise _LineError(f"Duplicate field {key!r}")
        fields[key] = _parse_field_value(raw_value)
    return fields


def _parse_line(line_number: int, line: str) -> _Point:
    head_and_rest = _split_unescaped(line, " ", quotes=False)
    if len(head_and_rest) < 2:
        raise _LineError("No fields were provided")
    head = head_and_rest[0]
    rest = line[len(head) + 1 :]
    table, tags = _parse_series(head)
    sections = _split_unescaped(rest, " ", quotes=True)
    if not sections[0]:
        raise _LineError("No fields were provided")
    if len(sections) > 2 or (len(sections) == 2 and not sections[1]):
        raise _LineError(f"Could not parse entire line. Found trailing content: {rest!r}")
    fields = _parse_fields(sections[0])
    timestamp: int | None = None
    if len(sections) == 2:
        if not _INTEGER.fullmatch(sections[1]):
            raise _LineError(f"Unable to parse timestamp: {sections[1]!r}")
        timestamp = int(sections[1])

    for name in (*tags, *fields):
        if name == "time":
            raise _LineError("The column name 'time' is reserved")
    both = set(tags) & set(fields)
    if both:
        raise _LineError(f"Column {sorted(both)[0]!r} is both a tag and a field")
    return _Point(line_number, line, table, tags, fields, timestamp)


def _parse_line_protocol(body: str) -> tuple[list[_Point], list[dict[str, object]]]:
    points: list[_Point] = []
    errors: list[dict[str, object]] = []
    for line_number, raw_line in enumerate(body.split("\n"), start=1):
        line = raw_line.rstrip("\r").rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            points.append(_parse_line(line_number, line))
        except _LineError as exc:
            errors.append(_line_error(line_number, line, str(exc)))
    return points, errors


def _line_error(line_number: int, line: str, message: str) -> dict[str, object]:
    return {"original_line": line, "line_number": line_number, "error_message": message}


def _encode_rows(rows: list[dict[str, object]], format_name: str) -> _Response:
    if format_name == "json":
        return _json_ok(rows)
    if format_name == "jsonl":
        text = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
        return _Response(200, text.encode(), "application/jsonl")
    if format_name == "csv":
        columns: list[str] = []
        for row in rows:
            columns.extend(name for name in row if name not in columns)
        lines = [",".join(columns)] if columns else []
        lines += [",".join(_csv_cell(row.get(name)) for name in columns) for row in rows]
        return _Response(200, "".join(line + "\n" for line in lines).encode(), "text/csv")
    raise _ApiError(_text(400, f"the InfluxDB 3 stand-in does not support format={format_name}"))


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


def _first_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, value)
    return values


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------


class StandIn:
    """In-memory InfluxDB 3 Core stand-in serving HTTP on ``host:port`` (port 0: pick one).

    Not InfluxDB: it implements the contract in ``../shared/influxdb3-api.md`` for tests and local
    runs. All switches are thread-safe and apply to the next request.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        database_limit: int = 5,
    ) -> None:
        if database_limit < 0:
            raise ValueError("database_limit must be >= 0")
        self._host = host
        self._port = port
        self._token = token
        self._database_limit = database_limit
        self._process_id = str(uuid.uuid4())

        # One lock guards data, counters, switches and the set of open connections; the
        # condition wakes hanging requests, latency sleeps and stop() waiting for handlers.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        # Serialises start/stop/outage, which block on the serving thread.
        self._lifecycle = threading.RLock()

        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_accepted = 0
        self._started = False
        self._stopped = False
        self._outage = False
        self._outage_epoch = 0
        self._hang_generation = 0  # bumped to release hanging requests
        self._disconnect_generation = 0  # bumped by outage/stop: in-flight requests give up

        self._databases: dict[str, _Database] = {}
        self._deleted: dict[str, _Database] = {}
        self._create_calls: Counter[str] = Counter()
        self._created: Counter[str] = Counter()  # creates answered 200, by name
        self._create_calls_total = 0
        self._requests: Counter[tuple[str, str]] = Counter()
        self._switches = _Switches()
        self._random = random.Random()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandIn:
        """Bind and serve in a daemon thread; returns self."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError("StandIn already started")
            self._bind()
            self._started = True
        return self

    def stop(self) -> None:
        """Close the listener and every open client connection; release hanging requests."""
        with self._lifecycle:
            if not self._started or self._stopped:
                return
            with self._lock:
                self._stopped = True
                self._hang_generation += 1
                self._disconnect_generation += 1
                self._changed.notify_all()
            self._unbind()
            with self._lock:
                self._changed.wait_for(lambda: not self._connections, _STOP_DRAIN_SECONDS)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    def _bind(self) -> None:
        server = _Server((self._host, self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"influxdb3-standin:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server = server
        self._serve_thread = thread

    def _unbind(self) -> None:
        server, thread = self._server, self._serve_thread
        self._server = None
        self._serve_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # shutdown() (unlike close()) wakes a handler blocked reading the next request.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            self._connections_accepted += 1

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._changed.notify_all()

    # ---- switches ----------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before answering every request (except /_standin/*)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._switches.latency = float(seconds)

    def set_faults(
        self,
        error_rate: float = 0.0,
        hang_rate: float = 0.0,
        reset_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Per request, at random: answer 500/503, hang, or reset the connection.

        One draw per request decides, in that order, so the rates add up (capped at 1). Setting
        faults releases requests that are hanging.
        """
        for name, rate in (
            ("error_rate", error_rate),
            ("hang_rate", hang_rate),
            ("reset_rate", reset_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        with self._lock:
            self._switches.error_rate = float(error_rate)
            self._switches.hang_rate = float(hang_rate)
            self._switches.reset_rate = float(reset_rate)
            if seed is not None:
                self._random.seed(seed)
            self._hang_generation += 1
            self._changed.notify_all()

    def set_hang(self, on: bool) -> None:
        """While on, every request is accepted and never answered; off releases them unanswered."""
        with self._lock:
            self._switches.hang = on
            if not on:
                self._hang_generation += 1
                self._changed.notify_all()

    def set_outage(self, on: bool) -> None:
        """On: close the listener and all connections (connection refused). Off: listen again."""
        with self._lifecycle:
            if not self._started or self._stopped:
                raise RuntimeError("set_outage needs a running StandIn")
            with self._lock:
                self._outage_epoch += 1
                if self._outage == on:
                    return
                self._outage = on
                if on:
                    self._disconnect_generation += 1
                    self._hang_generation += 1
                self._changed.notify_all()
            if on:
                self._unbind()
            else:
                self._bind()

    def set_token(self, token: str | None) -> None:
        with self._lock:
            self._token = token

    def set_database_limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("database limit must be >= 0")
        with self._lock:
            self._database_limit = limit

    def _timed_outage(self, seconds: float) -> None:
        try:
            self.set_outage(True)
        except RuntimeError:
            return
        with self._lock:
            epoch = self._outage_epoch
            self._changed.wait_for(
                lambda: self._stopped or self._outage_epoch != epoch, timeout=seconds
            )
            if self._stopped or self._outage_epoch != epoch:
                return  # stopped, or someone else took over the outage switch
        try:
            self.set_outage(False)
        except (RuntimeError, OSError):
            logger.exception("could not listen again after the timed outage")

    # ---- inspection and manipulation (no HTTP) -----------------------------------------------

    def databases(self) -> list[str]:
        """Active database names, sorted, without _internal."""
        with self._lock:
            return sorted(self._databases)

    def create_calls(self, name: str | None = None) -> int:
        """How many create-database requests reached the handler (any outcome) [for name]."""
        with self._lock:
            return self._create_calls_total if name is None else self._create_calls[name]

    def creations(self, name: str) -> int:
        """How many create requests for ``name`` were answered 200 (a new database)."""
        with self._lock:
            return self._created[name]

    def request_count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests received (faulted ones included, /_standin/* excluded), filtered."""
        with self._lock:
            return sum(
                count
                for (request_method, request_path), count in self._requests.items()
                if (method is None or request_method == method.upper())
                and (path is None or request_path == path)
            )

    def rows(self, database: str, table: str) -> list[dict[str, object]]:
        """The rows of a table as SELECT * returns them; [] when there is no such table."""
        with self._lock:
            found = self._databases.get(database)
            if found is None or table not in found.tables:
                return []
            return self._table_rows(found.tables[table])

    def create_database(self, name: str) -> None:
        """Create a database as if by hand (counts toward the limit); ValueError if refused."""
        try:
            _validate_database_name(name)
            with self._lock:
                if name in self._databases:
                    raise _ApiError(_text(409, _MSG_EXISTS))
                if len(self._databases) >= self._database_limit:
                    raise _limit_error(self._database_limit)
                self._databases[name] = _Database(name)
        except _ApiError as exc:
            raise ValueError(exc.response.body.decode()) from None

    def delete_database(self, name: str) -> None:
        """Soft delete as the API does (renamed NAME-YYYYMMDDTHHMMSS); KeyError if not found."""
        with self._lock:
            if name not in self._databases:
                raise KeyError(name)
            self._soft_delete(name)

    def reset(self) -> None:
        """Drop all data, counters and switches (the token and the database limit stay)."""
        with self._lock:
            self._databases.clear()
            self._deleted.clear()
            self._create_calls.clear()
            self._created.clear()
            self._create_calls_total = 0
            self._requests.clear()
            self._connections_accepted = 0
            self._switches = _Switches()
            self._random = random.Random()
            self._hang_generation += 1
            self._changed.notify_all()
            in_outage = self._outage and not self._stopped
        if in_outage:
            self.set_outage(False)

    def state(self) -> dict[str, object]:
        """A JSON-able snapshot of databases, counters and switches (never the token)."""
        with self._lock:
            switches = self._switches
            return {
                "databases": sorted(self._databases),
                "retention_seconds": {
                    name: database.retention_seconds
                    for name, database in sorted(self._databases.items())
                },
                "deleted_databases": sorted(self._deleted),
                "database_limit": self._database_limit,
                "auth_enabled": self._token is not None,
                "create_calls": dict(sorted(self._create_calls.items())),
                "create_calls_total": self._create_calls_total,
                "requests": {
                    f"{method} {path}": count
                    for (method, path), count in sorted(self._requests.items())
                },
                "connections_accepted": self._connections_accepted,
                "switches": {
                    "latency": switches.latency,
                    "error_rate": switches.error_rate,
                    "hang_rate": switches.hang_rate,
                    "reset_rate": switches.reset_rate,
                    "hang": switches.hang,
                    "outage": self._outage,
                },
            }

    # ---- request pipeline (called by the handler) --------------------------------------------

    def _count_request(self, method: str, path: str) -> None:
        with self._lock:
            self._requests[(method, path)] += 1

    def _pre_answer(self) -> _Fate:
        """Apply latency and the fault switches; a hang blocks here until it is released."""
        with self._lock:
            latency = self._switches.latency
            disconnects = self._disconnect_generation
            if latency > 0 and self._changed.wait_for(
                lambda: self._disconnect_generation != disconnects, timeout=latency
            ):
                return "drop"
            switches = self._switches
            # One draw per request: [0, error) errors, then hangs, then resets.
            draw = self._random.random()
            error_below = switches.error_rate
            hang_below = error_below + switches.hang_rate
            reset_below = hang_below + switches.reset_rate
            fate: _Fate = "ok"
            if switches.hang or error_below <= draw < hang_below:
                fate = "hang"
            elif draw < error_below:
                fate = "error"
            elif draw < reset_below:
                fate = "reset"
            if fate == "hang":
                # Released by set_hang(False), set_faults(), an outage, reset() or stop(); the
                # request is then dropped unanswered (the client has given up long ago).
                hangs = self._hang_generation
                self._changed.wait_for(lambda: self._hang_generation != hangs)
                return "drop"
            return fate

    def _fault_error(self) -> _Response:
        with self._lock:
            status, message = self._random.choice(_FAULT_ERRORS)
        return _text(status, message)

    def _authenticate(self, header: str | None) -> _Response | None:
        with self._lock:
            token = self._token
        if token is None:
            return None
        if header is None:
            return _json_error(401, _MSG_UNAUTHENTICATED, compact=False)
        # Core splits on single spaces and wants exactly "<scheme> <credentials>".
        parts = header.split(" ")
        if len(parts) != 2 or parts[0] not in ("Bearer", "Token", "Basic"):
            return _json_error(400, _MSG_MALFORMED_AUTH, compact=False)
        scheme, credentials = parts
        if scheme == "Basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _json_error(400, _MSG_MALFORMED_AUTH, compact=False)
            username, colon, credentials = decoded.rpartition(":")
            if not colon or ":" in username:
                return _json_error(400, _MSG_MALFORMED_AUTH, compact=False)
        if not hmac.compare_digest(credentials.encode(), token.encode()):
            return _json_error(401, _MSG_UNAUTHENTICATED, compact=False)
        return None

    def _route(self, request: _Request) -> _Response:
        path, method = request.path, request.method
        if path in ("/health", "/api/v1/health"):
            self._require_method(method, "GET")
            return _Response(200, b"OK", "text/plain; charset=utf-8")
        if path == "/ping":
            self._require_method(method, "GET", "POST")
            return self._ping()
        if path == "/api/v3/configure/database":
            self._require_method(method, "GET", "POST", "DELETE")
            if method == "POST":
                return self._api_create_database(request)
            if method == "DELETE":
                return self._api_delete_database(request)
            return self._api_list_databases(request)
        if path == "/api/v3/write_lp":
            self._require_method(method, "POST")
            return self._api_write(request)
        if path == "/api/v3/query_sql":
            self._require_method(method, "GET", "POST")
            return self._api_query(request)
        return _text(404, "Not found")

    @staticmethod
    def _require_method(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _ApiError(_text(405, "unsupported method"))

    def _ping(self) -> _Response:
        response = _json_ok(
            {
                "product_name": PRODUCT_NAME,
                "version": VERSION,
                "revision": REVISION,
                "process_id": self._process_id,
            }
        )
        request_id = str(uuid.uuid4())
        return _Response(
            response.status,
            response.body,
            response.content_type,
            (
                ("X-Influxdb-Build", "Core"),
                ("X-Influxdb-Version", VERSION),
                ("Request-Id", request_id),
                ("X-Request-Id", request_id),
            ),
        )

    # ---- /api/v3/configure/database ----------------------------------------------------------

    def _api_create_database(self, request: _Request) -> _Response:
        self._count_create_call(request.body)
        if not request.json_content_type():
            return _text(415, _MSG_CONTENT_TYPE)
        if request.too_large:
            return _text(413, _MSG_TOO_LARGE)
        payload = _load_json_object(request.body)
        name = payload.get("db")
        if name is None:
            raise _ApiError(_text(400, "serde json error: missing field `db`"))
        if not isinstance(name, str):
            raise _ApiError(
                _text(400, f"serde json error: invalid type: {name!r}, expected a string")
            )
        retention = payload.get("retention_period")
        retention_seconds: float | None = None
        if retention is not None:
            if not isinstance(retention, str):
                raise _ApiError(
                    _text(
                        400, f"serde json error: invalid type: {retention!r}, expected a duration"
                    )
                )
            try:
                retention_seconds = _parse_retention_period(retention)
            except ValueError as exc:
                raise _ApiError(_text(400, f"serde json error: {exc}")) from None
        _validate_database_name(name)
        with self._lock:
            # Existence before the limit: an existing name answers 409 even on a full server.
            if name in self._databases:
                return _text(409, _MSG_EXISTS)
            if len(self._databases) >= self._database_limit:
                raise _limit_error(self._database_limit)
            self._databases[name] = _Database(name, retention_seconds)
            self._created[name] += 1
        return _Response(200)

    def _count_create_call(self, body: bytes) -> None:
        name: object = None
        try:
            payload = json.loads(body)
            if isinstance(payload, dict):
                name = payload.get("db")
        except ValueError:
            pass
        with self._lock:
            self._create_calls_total += 1
            if isinstance(name, str):
                self._create_calls[name] += 1

    def _api_list_databases(self, request: _Request) -> _Response:
        format_name = request.params.get("format")
        if format_name is None:
            return _text(400, "serde error: missing field `format`")
        with self._lock:
            names = sorted([INTERNAL_DATABASE, *self._databases])
        return _encode_rows([{"iox::database": name} for name in names], format_name)

    def _api_delete_database(self, request: _Request) -> _Response:
        name = request.params.get("db")
        if name is None:
            return _text(400, "serde error: missing field `db`")
        hard_delete_at = request.params.get("hard_delete_at", "default")
        if hard_delete_at not in ("now", "never", "default") and not _RFC3339.fullmatch(
            hard_delete_at
        ):
            return _text(400, "Cannot parse the timestamp: input contains invalid characters")
        with self._lock:
            if name not in self._databases:
                return _text(404, f"the requested resource was not found: {name}")
            self._soft_delete(name)
        return _Response(200)

    def _soft_delete(self, name: str) -> None:
        database = self._databases.pop(name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        deleted_name = f"{name}-{stamp}"
        suffix = 1
        while deleted_name in self._deleted:  # two deletes of one name within a second
            suffix += 1
            deleted_name = f"{name}-{stamp}-{suffix}"
        database.name = deleted_name
        self._deleted[deleted_name] = database

    # ---- /api/v3/write_lp --------------------------------------------------------------------

    def _api_write(self, request: _Request) -> _Response:
        name = request.params.get("db")
        if name is None:
            return _text(400, "missing query parameter 'db'")
        _validate_database_name(name)
        precision = request.params.get("precision", "auto")
        if precision not in _PRECISION_NS:
            variants = ", ".join(f"`{variant}`" for variant in _PRECISION_NS)
            return _text(
                400, f"serde error: unknown variant `{precision}`, expected one of {variants}"
            )
        accept_partial = request.params.get("accept_partial", "true").lower() != "false"
        points, errors = _parse_line_protocol(_write_body(request))
        if errors and not accept_partial:
            return _json_error(400, "parsing failed for write_lp endpoint", errors[0])
        default_time = time.time_ns()
        with self._lock:
            database = self._databases.get(name)
            if database is None and points:
                # A write to a missing database creates it, and so takes a slot of the limit.
                if len(self._databases) >= self._database_limit:
                    raise _limit_error(self._database_limit)
                database = self._databases[name] = _Database(name)
            if database is not None:
                for point in points:
                    problem = self._store_point(database, point, precision, default_time)
                    if problem is not None:
                        errors.append(_line_error(point.line_number, point.original_line, problem))
        if errors:
            errors.sort(key=lambda error: cast(int, error["line_number"]))
            return _json_error(400, _MSG_PARTIAL_WRITE, errors)
        return _Response(204)

    @staticmethod
    def _store_point(
        database: _Database, point: _Point, precision: str, default_time: int
    ) -> str | None:
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
            table = database.tables[point.table] = _Table()
        for tag in point.tags:
            table.columns[tag] = "tag"
        for name, (kind, _value) in point.fields.items():
            table.columns[name] = kind

        if point.timestamp is None:
            timestamp = default_time
        else:
            multiplier = _PRECISION_NS[precision]
            if multiplier is None:
                multiplier = _guess_precision_ns(point.timestamp)
            timestamp = point.timestamp * multiplier
        key: _SeriesKey = (tuple(sorted(point.tags.items())), timestamp)
        stored = table.points.setdefault(key, {})
        stored.update({name: value for name, (_kind, value) in point.fields.items()})
        return None

    # ---- /api/v3/query_sql -------------------------------------------------------------------

    def _api_query(self, request: _Request) -> _Response:
        if request.method == "POST":
            if request.too_large:
                return _text(413, _MSG_TOO_LARGE)
            payload: dict[str, object] = _load_json_object(request.body)
        else:
            if not request.query:
                return _text(400, "missing query parameters 'db' and 'q'")
            payload = dict(request.params)
        database_name = _required_string(payload, "db")
        sql = _required_string(payload, "q")
        format_value = payload.get("format") or request.accept_format()
        format_name = str(format_value).lower()

        with self._lock:
            database = self._databases.get(database_name)
            if database is None:
                return _json_error(404, f"query error: database not found: {database_name}")
            rows = self._run_sql(database, sql)
        return _encode_rows(rows, format_name)

    def _run_sql(self, database: _Database, sql: str) -> list[dict[str, object]]:
        match = _SQL.match(sql)
        if match is None:
            raise _ApiError(
                _text(
                    400,
                    f"the InfluxDB 3 stand-in does not support this SQL: {sql.strip()!r} "
                    f"(supported: {_SUPPORTED_SQL})",
                )
            )
        table_name = _sql_identifier(match.group("table"))
        table = database.tables.get(table_name)
        if table is None:
            raise _ApiError(
                _text(400, f"Error during planning: table 'public.iox.{table_name}' not found")
            )
        limit = int(match.group("limit")) if match.group("limit") is not None else None
        rows: list[dict[str, object]]
        if match.group("count"):
            alias = match.group("alias")
            # DataFusion names an unaliased COUNT(*) column "count(*)".
            column = _sql_identifier(alias) if alias else "count(*)"
            rows = [{column: len(table.points)}]
        else:
            rows = self._table_rows(table)
            if (match.group("direction") or "").upper() == "DESC":
                rows.reverse()
        return rows if limit is None else rows[:limit]

    @staticmethod
    def _table_rows(table: _Table) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for (tags, timestamp), fields in sorted(
            table.points.items(), key=lambda item: (item[0][1], item[0][0])
        ):
            row: dict[str, object] = dict(tags)
            row.update(sorted(fields.items()))
            row["time"] = _format_time(timestamp)
            rows.append(row)
        return rows

    # ---- /_standin/* -------------------------------------------------------------------------

    def _control(self, request: _Request) -> tuple[_Response, Callable[[], None] | None]:
        """Control endpoints for out-of-process use; exempt from auth, latency and faults."""
        if request.path == "/_standin/state" and request.method == "GET":
            return _json_ok(self.state()), None
        if request.path == "/_standin/reset" and request.method == "POST":
            self.reset()
            return _json_ok(self.state()), None
        if request.path == "/_standin/switches" and request.method == "POST":
            payload = _load_json_object(request.body)
            outage_seconds = self._apply_switches(payload)
            after: Callable[[], None] | None = None
            answer = _json_ok(self.state())
            if outage_seconds is not None:
                seconds = outage_seconds
                # This connection closes with its answer (FIN after the body), so the outage,
                # which tears connections down, cannot cut the answer short under load.
                answer = dataclasses.replace(answer, headers=(("Connection", "close"),))

                def after() -> None:
                    # A moment's grace, too, for the client to read the answer off the wire.
                    timer = threading.Timer(0.1, self._timed_outage, args=(seconds,))
                    timer.name = "influxdb3-standin-outage"
                    timer.daemon = True
                    timer.start()

            return answer, after
        return _text(404, "Not found"), None

    def _apply_switches(self, payload: dict[str, Any]) -> float | None:
        known = {
            "latency",
            "error_rate",
            "hang_rate",
            "reset_rate",
            "seed",
            "hang",
            "database_limit",
            "outage_seconds",
        }
        unknown = sorted(set(payload) - known)
        if unknown:
            raise _ApiError(_text(400, f"unknown switch(es): {', '.join(unknown)}"))

        def number(key: str, low: float, high: float | None = None) -> float | None:
            value = payload.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _ApiError(_text(400, f"{key} must be a number"))
            if value < low or (high is not None and value > high):
                raise _ApiError(_text(400, f"{key} out of range"))
            return float(value)

        latency = number("latency", 0.0)
        rates = {key: number(key, 0.0, 1.0) for key in ("error_rate", "hang_rate", "reset_rate")}
        limit = number("database_limit", 0.0)
        if limit is not None and not limit.is_integer():
            raise _ApiError(_text(400, "database_limit must be an integer"))
        outage_seconds = number("outage_seconds", 0.0)
        hang = payload.get("hang")
        if hang is not None and not isinstance(hang, bool):
            raise _ApiError(_text(400, "hang must be true or false"))
        seed = payload.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _ApiError(_text(400, "seed must be an integer"))

        if latency is not None:
            self.set_latency(latency)
        if any(rate is not None for rate in rates.values()) or seed is not None:
            with self._lock:
                current = self._switches
                self.set_faults(
                    error_rate=_pick(rates["error_rate"], current.error_rate),
                    hang_rate=_pick(rates["hang_rate"], current.hang_rate),
                    reset_rate=_pick(rates["reset_rate"], current.reset_rate),
                    seed=seed,
                )
        if hang is not None:
            self.set_hang(hang)
        if limit is not None:
            self.set_database_limit(int(limit))
        return outage_seconds


def _write_body(request: _Request) -> str:
    if request.too_large:
        raise _ApiError(_text(413, _MSG_TOO_LARGE))
    try:
        body = request.body.decode()
    except UnicodeDecodeError as exc:
        raise _ApiError(_text(400, f"body content is not valid utf8: {exc}")) from None
    # Blank lines and comments are no data either.
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body.split("\n")):
        raise _ApiError(_text(400, _MSG_EMPTY_WRITE))
    return body


def _required_string(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        raise _ApiError(_text(400, f"serde error: missing field `{key}`"))
    if not isinstance(value, str):
        raise _ApiError(_text(400, f"serde error: invalid type for `{key}`, expected a string"))
    return value


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _load_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        detail = (
            f"{message} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else message
        )
        raise _ApiError(_text(400, f"serde json error: {detail}")) from None
    if not isinstance(payload, dict):
        raise _ApiError(
            _text(400, f"serde json error: invalid type: {type(payload).__name__}, expected a map")
        )
    return payload


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    query: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    too_large: bool

    def json_content_type(self) -> bool:
        value = self.headers.get("content-type", "")
        mime = value.split(";", 1)[0].strip().lower()
        kind, _, subtype = mime.partition("/")
        return kind == "application" and (subtype == "json" or subtype.endswith("+json"))

    def accept_format(self) -> str:
        accept = self.headers.get("accept", "")
        if "application/jsonl" in accept:
            return "jsonl"
        if "text/csv" in accept:
            return "csv"
        return "json"


class _ClientGone(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # listen again on the same port after an outage

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.standin._track(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.standin._untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length
    server_version = "influxdb3-standin"
    timeout = _IDLE_CONNECTION_SECONDS

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus the client's
        # delayed ACK adds ~40 ms to every answer on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def _standin(self) -> StandIn:
        return cast(_Server, self.server).standin

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is logged by _handle, without headers

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        started = time.monotonic()
        standin = self._standin
        split = urllib.parse.urlsplit(self.path)
        outcome = "?"
        try:
            body, too_large = self._read_body()
            request = _Request(
                method=self.command,
                path=split.path,
                query=split.query,
                params=_first_values(split.query),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                too_large=too_large,
            )
            if split.path.startswith("/_standin/"):
                try:
                    response, after = standin._control(request)
                except _ApiError as exc:
                    response, after = exc.response, None
                self._send(response)
                outcome = str(response.status)
                if after is not None:
                    after()
                return

            standin._count_request(self.command, split.path)
            fate = standin._pre_answer()
            if fate == "drop":
                outcome = "dropped unanswered"
                self.close_connection = True
                return
            if fate == "reset":
                outcome = "connection reset"
                self._reset_connection()
                return
            if fate == "error":
                response = standin._fault_error()
            else:
                response = standin._authenticate(self.headers.get("Authorization")) or (
                    self._dispatch(request)
                )
            self._send(response)
            outcome = str(response.status)
        except _ClientGone:
            outcome = "client went away"
            self.close_connection = True
        except OSError as exc:
            outcome = f"connection error: {exc.__class__.__name__}"
            self.close_connection = True
        finally:
            logger.info(
                "%s %s -> %s (%.1f ms)",
                self.command,
                split.path,
                outcome,
                (time.monotonic() - started) * 1000,
            )

    def _dispatch(self, request: _Request) -> _Response:
        try:
            return self._standin._route(request)
        except _ApiError as exc:
            return exc.response
        except Exception:
            logger.exception("stand-in bug while handling %s %s", request.method, request.path)
            return _text(500, "internal error: the InfluxDB 3 stand-in failed on this request")

    def _read_body(self) -> tuple[bytes, bool]:
        """The request body (b"" if over the limit) and whether it was over the limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", False
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self.close_connection = True
            raise _ClientGone() from None
        if length > MAX_REQUEST_BYTES:
            if length > _MAX_DRAIN_BYTES:
                self.close_connection = True
            else:
                self._drain(length)
            return b"", True
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ClientGone()
        return body, False

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                raise _ClientGone()
            remaining -= len(chunk)

    def _read_chunked_body(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise _ClientGone()
            try:
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _ClientGone() from None
            if chunk_size == 0:
                break
            if size + chunk_size > MAX_REQUEST_BYTES:
                self._drain(chunk_size)
            else:
                chunk = self.rfile.read(chunk_size)
                if len(chunk) < chunk_size:
                    raise _ClientGone()
                parts.append(chunk)
            size += chunk_size
            self.rfile.readline(1024)  # CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        if size > MAX_REQUEST_BYTES:
            return b"", True
        return b"".join(parts), False

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        if response.status != 204:  # RFC 9110: no Content-Length on 204
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)
        self.wfile.flush()

    def _reset_connection(self) -> None:
        """Abort the TCP connection: with SO_LINGER 0, close() sends RST instead of FIN."""
        self.close_connection = True
        connection = self.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # socket.close() would wait for rfile/wfile to be closed too; close the descriptor now.
        os.close(connection.detach())
