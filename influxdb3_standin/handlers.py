"""The InfluxDB 3 Core endpoints: routing, and each endpoint's checks in Core's order.

The order of checks matters as much as the checks: it decides which error a bad request gets
(e.g. content type before body size, existence before the database limit), so each handler
follows ``../shared/influxdb3-api.md`` step by step and leaves the data rules to the catalog.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from influxdb3_standin import auth
from influxdb3_standin.catalog import Catalog, parse_retention_period, validate_database_name
from influxdb3_standin.lineprotocol import PRECISION_NS, parse_line_protocol
from influxdb3_standin.messages import (
    MSG_CONTENT_TYPE,
    MSG_EMPTY_WRITE,
    MSG_PARTIAL_WRITE,
    MSG_TOO_LARGE,
    ApiError,
    Request,
    Response,
    json_error,
    json_ok,
    load_json_object,
    text_error,
)
from influxdb3_standin.sql import encode_rows, run_sql

logger = logging.getLogger(__name__)

PRODUCT_NAME = "InfluxDB 3 Core"
VERSION = "3.10.0-standin"
REVISION = "standin"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
)


@dataclass
class Counters:
    """What reached the API, for tests to inspect; guarded by the stand-in's lock."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    create_calls: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)  # creates answered 200, by name
    create_calls_total: int = 0

    def clear(self) -> None:
        self.requests.clear()
        self.create_calls.clear()
        self.created.clear()
        self.create_calls_total = 0


class Api:
    """Answers authenticated API requests from the catalog, under the stand-in's lock."""

    def __init__(
        self, lock: threading.RLock, catalog: Catalog, counters: Counters, token: str | None
    ) -> None:
        self._lock = lock
        self._catalog = catalog
        self._counters = counters
        self.token = token  # None: no auth; changed under the lock
        self._process_id = str(uuid.uuid4())

    def count_request(self, method: str, path: str) -> None:
        with self._lock:
            self._counters.requests[(method, path)] += 1

    def authenticate(self, header: str | None) -> Response | None:
        """None if the request may proceed, else the 401/400 answer."""
        with self._lock:
            token = self.token
        return auth.refusal(token, header)

    def dispatch(self, request: Request) -> Response:
        """The answer to an authenticated request; a stand-in bug answers 500, not a hang-up."""
        try:
            return self._route(request)
        except ApiError as exc:
            return exc.response
        except Exception:
            logger.exception("stand-in bug while handling %s %s", request.method, request.path)
            return text_error(500, "internal error: the InfluxDB 3 stand-in failed on this request")

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path in ("/health", "/api/v1/health"):
            _require_method(method, "GET")
            return Response(200, b"OK", "text/plain; charset=utf-8")
        if path == "/ping":
            _require_method(method, "GET", "POST")
            return self._ping()
        if path == "/api/v3/configure/database":
            _require_method(method, "GET", "POST", "DELETE")
            if method == "POST":
                return self._create_database(request)
            if method == "DELETE":
                return self._delete_database(request)
            return self._list_databases(request)
        if path == "/api/v3/write_lp":
            _require_method(method, "POST")
            return self._write(request)
        if path == "/api/v3/query_sql":
            _require_method(method, "GET", "POST")
            return self._query(request)
        return text_error(404, "Not found")

    def _ping(self) -> Response:
        response = json_ok(
            {
                "product_name": PRODUCT_NAME,
                "version": VERSION,
                "revision": REVISION,
                "process_id": self._process_id,
            }
        )
        request_id = str(uuid.uuid4())
        return Response(
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

    def _create_database(self, request: Request) -> Response:
        self._count_create_call(request.body)
        if not request.json_content_type():
            return text_error(415, MSG_CONTENT_TYPE)
        if request.too_large:
            return text_error(413, MSG_TOO_LARGE)
        payload = load_json_object(request.body)
        name = payload.get("db")
        if name is None:
            raise ApiError(text_error(400, "serde json error: missing field `db`"))
        if not isinstance(name, str):
            raise ApiError(
                text_error(400, f"serde json error: invalid type: {name!r}, expected a string")
            )
        retention = payload.get("retention_period")
        retention_seconds: float | None = None
        if retention is not None:
            if not isinstance(retention, str):
                raise ApiError(
                    text_error(
                        400, f"serde json error: invalid type: {retention!r}, expected a duration"
                    )
                )
            try:
                retention_seconds = parse_retention_period(retention)
            except ValueError as exc:
                raise ApiError(text_error(400, f"serde json error: {exc}")) from None
        validate_database_name(name)
        with self._lock:
            self._catalog.create(name, retention_seconds)
            self._counters.created[name] += 1
        return Response(200)

    def _count_create_call(self, body: bytes) -> None:
        name: object = None
        try:
            payload = json.loads(body)
            if isinstance(payload, dict):
                name = payload.get("db")
        except ValueError:
            pass
        with self._lock:
            self._counters.create_calls_total += 1
            if isinstance(name, str):
                self._counters.create_calls[name] += 1

    def _list_databases(self, request: Request) -> Response:
        format_name = request.params.get("format")
        if format_name is None:
            return text_error(400, "serde error: missing field `format`")
        show_deleted = request.params.get("show_deleted", "false")
        if show_deleted not in ("true", "false"):
            return text_error(400, f"serde error: invalid value `{show_deleted}`, expected a bool")
        with self._lock:
            active, deleted = self._catalog.listed_names(), sorted(self._catalog.deleted)
        if show_deleted == "false":
            rows: list[dict[str, object]] = [{"iox::database": name} for name in active]
        else:  # a column more: active ones first, then the deleted ones, each by name
            rows = [{"iox::database": name, "deleted": False} for name in active]
            rows += [{"iox::database": name, "deleted": True} for name in deleted]
        return encode_rows(rows, format_name)

    def _delete_database(self, request: Request) -> Response:
        name = request.params.get("db")
        if name is None:
            return text_error(400, "serde error: missing field `db`")
        hard_delete_at = request.params.get("hard_delete_at", "default")
        if hard_delete_at not in ("now", "never", "default") and not _RFC3339.fullmatch(
            hard_delete_at
        ):
            return text_error(400, "Cannot parse the timestamp: input contains invalid characters")
        with self._lock:
            try:
                self._catalog.soft_delete(name)
            except KeyError:
                return text_error(404, f"the requested resource was not found: {name}")
        return Response(200)

    # ---- /api/v3/write_lp --------------------------------------------------------------------

    def _write(self, request: Request) -> Response:
        name = request.params.get("db")
        if name is None:
            return text_error(400, "missing query parameter 'db'")
        validate_database_name(name)
        precision = request.params.get("precision", "auto")
        if precision not in PRECISION_NS:
            variants = ", ".join(f"`{variant}`" for variant in PRECISION_NS)
            return text_error(
                400, f"serde error: unknown variant `{precision}`, expected one of {variants}"
            )
        accept_partial = request.params.get("accept_partial", "true").lower() != "false"
        points, errors = parse_line_protocol(_write_body(request))
        if errors and not accept_partial:
            return json_error(400, "parsing failed for write_lp endpoint", errors[0])
        default_time = time.time_ns()
        with self._lock:
            errors += self._catalog.write(name, points, precision, default_time)
        if errors:
            errors.sort(key=lambda error: cast(int, error["line_number"]))
            return json_error(400, MSG_PARTIAL_WRITE, errors)
        return Response(204)

    # ---- /api/v3/query_sql -------------------------------------------------------------------

    def _query(self, request: Request) -> Response:
        if request.method == "POST":
            if request.too_large:
                return text_error(413, MSG_TOO_LARGE)
            payload: dict[str, object] = load_json_object(request.body)
        else:
            if not request.query:
                return text_error(400, "missing query parameters 'db' and 'q'")
            payload = dict(request.params)
        database_name = _required_string(payload, "db")
        sql = _required_string(payload, "q")
        format_value = payload.get("format") or request.accept_format()
        format_name = str(format_value).lower()

        with self._lock:
            database = self._catalog.databases.get(database_name)
            if database is None:
                return json_error(404, f"query error: database not found: {database_name}")
            rows = run_sql(database, sql, time.time_ns())
        return encode_rows(rows, format_name)


def _require_method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(text_error(405, "unsupported method"))


def _write_body(request: Request) -> str:
    if request.too_large:
        raise ApiError(text_error(413, MSG_TOO_LARGE))
    try:
        body = request.body.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(text_error(400, f"body content is not valid utf8: {exc}")) from None
    # Blank lines and comments are no data either.
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body.split("\n")):
        raise ApiError(text_error(400, MSG_EMPTY_WRITE))
    return body


def _required_string(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        raise ApiError(text_error(400, f"serde error: missing field `{key}`"))
    if not isinstance(value, str):
        raise ApiError(text_error(400, f"serde error: invalid type for `{key}`, expected a string"))
    return value
