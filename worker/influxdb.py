"""InfluxDB 3 HTTP client: the only module that talks to InfluxDB.

It follows the contract in ``../shared/influxdb3-api.md`` (InfluxDB 3 Core, v3 API). Every third-
party failure becomes one of the families of ``worker.errors`` here, the token removed from every
message. Error bodies are plain text or JSON, never trusted to be either."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError

from worker import identity, live_checks
from worker.errors import (
    DatabaseLimitReached,
    InfluxDBBadResponse,
    InfluxDBRejected,
    InfluxDBServerError,
    InfluxDBTimeout,
    InfluxDBUnauthorized,
    InfluxDBUnreachable,
    InvalidDatabaseName,
    ProvisioningError,
)
from worker.identity import Contents, Marker
from worker.live_checks import LiveCheck
from worker.redaction import REDACTION_WINDOW_BYTES, redact, redact_capped, redact_cut

logger = logging.getLogger(__name__)

INTERNAL_DATABASE = "_internal"
_MAX_ERROR_TEXT = 300
_BODY_CHUNK = 16384
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # the largest answer read (100,000 databases listed: 5 MB)


class Listed(NamedTuple):
    """One listing: active and soft-deleted names (``_internal`` left out), the answer's Date
    header (the server's time as it answered: soft-deleted names are stamped by its clock)."""

    active: list[str]
    deleted: list[str]
    date: str | None


class InfluxDB3Client:
    """A pooled, timeout-bounded client for the InfluxDB 3 endpoints the worker uses."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        pool_size: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, adapter)
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        # Read once what requests reads from os.environ per call (proxies, CA): 0.5 ms each.
        self._session.trust_env = False
        self._session.proxies = requests.utils.get_environ_proxies(self.url)
        if ca_bundle := os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"):
            self._session.verify = ca_bundle
        self.calls = 0  # requests sent, for the reconciler's cost summary
        self._calls_lock = threading.Lock()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def ensure_database(self, name: str, retention_period: str | None = None) -> bool:
        """Create ``name`` unless it exists: True when created now, False when it was there."""
        body = {"db": name} | ({"retention_period": retention_period} if retention_period else {})
        response = self._send("POST", "/api/v3/configure/database", json_body=body)
        if response.status_code in (200, 201, 204):
            return True
        if response.status_code == 409:
            return False
        raise self._classify(response, "create database")

    def delete_database(self, name: str, hard_delete_at: str | None = None) -> bool:
        """Soft-delete ``name``: True when deleted now, False when it was not there (404)."""
        params = {"db": name} | ({"hard_delete_at": hard_delete_at} if hard_delete_at else {})
        response = self._send("DELETE", "/api/v3/configure/database", params=params)
        if response.status_code in (200, 204):
            return True
        if response.status_code == 404:
            return False
        raise self._classify(response, "delete database")

    def list_databases(self) -> list[str]:
        """Names of the active databases, ``_internal`` left out."""
        return self.list_all(deleted=False).active

    def list_all(self, *, deleted: bool = True) -> Listed:
        """Every database, soft-deleted ones too unless ``deleted=False`` (and none from a
        server that does not show them)."""
        params = {"format": "json", "show_deleted": "true" if deleted else "false"}
        response = self._send("GET", "/api/v3/configure/database", params=params)
        if response.status_code != 200:
            raise self._classify(response, "list databases")
        payload = self._json(response, "list databases")
        if not isinstance(payload, list):
            raise InfluxDBBadResponse("list databases: expected a JSON array")
        listed: tuple[list[str], list[str]] = ([], [])
        for item in payload:
            entry = item if isinstance(item, dict) else {}
            name, gone = entry.get("iox::database"), entry.get("deleted", False)
            if not isinstance(name, str) or not isinstance(gone, bool):
                raise InfluxDBBadResponse("list databases: an entry without a name or flag")
            listed[int(gone)].append(name)
        # Without _internal (always listed) it is no listing: `[]` would say all were deleted.
        if INTERNAL_DATABASE not in listed[0]:
            raise InfluxDBBadResponse(f"list databases: no {INTERNAL_DATABASE}: not InfluxDB 3's")
        listed[0].remove(INTERNAL_DATABASE)
        return Listed(*listed, response.headers.get("Date"))

    def write_marker(
        self, database: str, tenant_id: str, incarnation: str, timestamp_ns: int
    ) -> None:
        """Write the ``_init`` marker point (``identity.marker_line``). A fixed timestamp (the
        tenant's creation) makes re-runs overwrite the point."""
        response = self._send(
            "POST",
            "/api/v3/write_lp",
            params={"db": database, "precision": "ns"},
            data=identity.marker_line(tenant_id, incarnation, timestamp_ns).encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response.status_code not in (200, 204):
            raise self._classify(response, "write marker")

    def read_markers(self, database: str) -> list[Marker] | None:
        """Incarnations the ``_init`` schema names (they outlive retention), then its visible
        points (at most 100); [] if no ``_init`` table; None if no database. A server without
        information_schema is read by its points alone."""
        try:
            rows = self.query(database, identity.MARKER_COLUMNS_QUERY)
        except _DatabaseNotFound:
            return None
        except _TableNotFound as exc:  # no information_schema; any other refusal raises
            if "information_schema" not in str(exc).lower():
                raise
            rows = []
        columns = (row.get("column_name") for row in rows)
        markers = identity.schema_markers(c for c in columns if isinstance(c, str))
        try:  # even when the schema named no column (a server that answers every query so)
            rows = self.query(database, identity.MARKER_QUERY)
        except _DatabaseNotFound:
            return None
        except _TableNotFound:
            return markers
        return markers + [Marker.of_point(row) for row in rows]

    def read_contents(self, database: str) -> Contents | None:
        """Whether it holds any table, then (unless none: one query) its markers; None if no
        database. A server without information_schema cannot tell: not empty."""
        try:
            empty = not self.query(database, identity.TABLES_QUERY)
        except _DatabaseNotFound:
            return None
        except _TableNotFound:  # no information_schema: cannot tell
            empty = False
        markers = [] if empty else self.read_markers(database)
        return None if markers is None else Contents(markers, empty)

    def query(
        self,
        database: str,
        sql: str,
        *,
        timeout: tuple[float, float] | None = None,
        deadline: float | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``sql`` on ``database`` as JSON objects; with ``deadline`` (a
        ``time.monotonic()`` value) the whole answer, body included, must arrive by then."""
        response = self._send(
            "GET",
            "/api/v3/query_sql",
            params={"db": database, "q": sql, "format": "json"},
            timeout=timeout,
            deadline=deadline,
        )
        if response.status_code != 200:
            raise self._classify(response, "query")
        rows = self._json(response, "query")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InfluxDBBadResponse("query: expected a JSON array of objects")
        return rows

    def count_rows(
        self,
        database: str,
        table: str,
        *,
        timeout: tuple[float, float] | None = None,
        deadline: float | None = None,
    ) -> int | None:
        """Rows in ``table``: 0 when the table is missing, None when the database is missing."""
        quoted = '"' + table.replace('"', '""') + '"'
        try:
            sql = f"SELECT COUNT(*) AS count FROM {quoted}"  # noqa: S608 - a quoted identifier
            rows = self.query(database, sql, timeout=timeout, deadline=deadline)
        except _DatabaseNotFound:
            return None
        except _TableNotFound:
            return 0
        count = rows[0].get("count") if rows else 0
        if not isinstance(count, int) or isinstance(count, bool):
            raise InfluxDBBadResponse("query: COUNT(*) did not return an integer")
        return count

    def live_check(self, database: str, table: str, timeout: float) -> LiveCheck:
        """Does ``database`` exist and how many rows has ``table``; never raises, never waits
        much longer than ``timeout`` seconds. Runs on this server's own lane
        (``worker.live_checks``): another server's trouble never delays it."""
        started = time.monotonic()
        deadline = started + timeout

        def elapsed_ms() -> float:
            return round((time.monotonic() - started) * 1000, 1)

        def count() -> int | None:
            return self.count_rows(database, table, timeout=(timeout, timeout), deadline=deadline)

        try:
            future = live_checks.submit(self.url, count)
        except live_checks.LaneBusy as exc:
            return LiveCheck(None, None, f"busy: {exc}; not asked", elapsed_ms())
        try:
            rows = future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            return LiveCheck(None, None, f"timeout: no answer within {timeout:g}s", elapsed_ms())
        except ProvisioningError as exc:
            return LiveCheck(None, None, f"{exc.reason}: {exc}", elapsed_ms())
        except Exception as exc:  # the live check must never break the stats page
            logger.exception("live check of %s failed unexpectedly", database)
            error = redact(f"internal_error: {type(exc).__name__}", self._secrets())
            return LiveCheck(None, None, error, elapsed_ms())
        return LiveCheck(rows is not None, rows, None, elapsed_ms())

    # -- transport ------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] | None = None,
        deadline: float | None = None,
    ) -> requests.Response:
        with self._calls_lock:
            self.calls += 1
        try:
            response = self._session.request(
                method,
                self.url + path,
                params=params,
                json=json_body,
                data=data,
                headers=headers,
                timeout=timeout or self._timeout,
                stream=True,  # read by us: bounded in size (and in time, with a deadline)
                # Only the configured server is called: a redirect is an answer, not a hop.
                allow_redirects=False,
            )
            self._read_body(response, deadline, f"{method} {path}")
            if response.is_redirect:  # the node's URL must name the InfluxDB server itself
                raise InfluxDBBadResponse(f"{method} {path}: redirects are not followed")
            return response
        except (requests.ConnectTimeout, requests.ReadTimeout) as exc:
            kind = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
            limit = (timeout or self._timeout)[0 if kind == "connect" else 1]
            timed_out = f"{method} {path}: {kind} timeout after {limit:g}s"
            error: ProvisioningError = InfluxDBTimeout(timed_out)
            error.request_sent = kind == "read"
            raise error from exc
        except requests.RequestException as exc:
            description = self._describe_connection_error(exc)
            error = InfluxDBUnreachable(f"{method} {path}: {description}")
            error.request_sent = "connection refused" not in description
            raise error from exc

    @staticmethod
    def _read_body(response: requests.Response, deadline: float | None, what: str) -> None:
        """Read the body, one socket read at a time, giving up past ``MAX_ANSWER_BYTES`` (a
        server cannot make us hold an unbounded answer) and, with a ``deadline``, at it (a
        server that trickles its answer cannot hold the caller's thread past it)."""
        chunks: list[bytes] = []
        size = 0
        error: ProvisioningError | None = None
        with response:
            try:
                while chunk := response.raw.read1(_BODY_CHUNK):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        error = InfluxDBBadResponse(
                            f"{what}: the answer is over {MAX_ANSWER_BYTES} bytes; not read"
                        )
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        error = InfluxDBTimeout(f"{what}: the answer was not complete in time")
                        break
            except ReadTimeoutError:
                error = InfluxDBTimeout(f"{what}: read timeout in the body")
            except (HTTPError, OSError) as exc:  # urllib3's own, unwrapped when streaming
                error = InfluxDBUnreachable(f"{what}: the answer broke off ({type(exc).__name__})")
        if error is not None:
            error.request_sent = True
            raise error
        response._content = b"".join(chunks)  # what .content and .json() read

    def _classify(self, response: requests.Response, action: str) -> ProvisioningError:
        status = response.status_code
        message = f"{action}: HTTP {status}: {self._error_text(response)}"
        lowered = message.lower()
        # A malformed header's 400 says so; one word could be an echoed id (authorizer-co)
        if status == 401 or (status == 400 and "authorization header" in lowered):
            return InfluxDBUnauthorized(message)
        if status >= 500 or status in (408, 429):  # 408/429: a proxy in front, try later
            return InfluxDBServerError(message)
        if 200 <= status < 300:
            return InfluxDBBadResponse(message)
        if status == 422 and "limit" in lowered:
            return DatabaseLimitReached(message)
        if action == "query" and status == 404 and "database not found" in lowered:
            return _DatabaseNotFound(message)
        if action == "query" and status == 400 and "not found" in lowered and "table" in lowered:
            return _TableNotFound(message)
        if action == "create database" and status == 400 and "serde" not in lowered:
            return InvalidDatabaseName(message)
        return InfluxDBRejected(message)

    def _error_text(self, response: requests.Response) -> str:
        # Redacted before it is cut: a secret split by the cut would no longer be recognised.
        body = response.content[:REDACTION_WINDOW_BYTES].decode("utf-8", errors="replace")
        text = redact_cut(body, self._secrets(), 4096).strip()
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: [[[[... a thousand deep
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            text = payload["error"]
        # Bodies may hold anything (NUL included, which Postgres text refuses): keep it printable.
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        text = " ".join(text.split()) or "(empty body)"
        return redact_capped(text, self._secrets(), _MAX_ERROR_TEXT)

    def _json(self, response: requests.Response, action: str) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: [[[[... a thousand deep
            raise InfluxDBBadResponse(f"{action}: response is not JSON") from None

    def _describe_connection_error(self, exc: requests.RequestException) -> str:
        # Walk to the root cause: "Connection refused" beats a urllib3 pool repr.
        root: BaseException = exc
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__  # type: ignore[assignment]
        text = str(root) or type(root).__name__
        if "refused" in text.lower():
            text = "connection refused"
        elif "reset" in text.lower():
            text = "connection reset by peer"
        elif "aborted" in text.lower() or "remote end closed" in text.lower():
            text = "connection closed without a response"
        return redact_capped(f"{type(exc).__name__}: {text}", self._secrets(), _MAX_ERROR_TEXT)

    def _secrets(self) -> tuple[str, ...]:
        return (self._token,) if self._token else ()


class _DatabaseNotFound(InfluxDBRejected):
    """A query named a database that does not exist (404)."""


class _TableNotFound(InfluxDBRejected):
    """A query named a table that does not exist yet (400)."""
