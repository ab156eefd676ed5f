"""``StandIn``: one in-memory InfluxDB 3 Core stand-in, its lifecycle, switches and inspection.

This module wires the others together (catalog, API handlers, faults, control endpoints, HTTP
transport) and owns what spans them: the one lock, start/stop, and outages, which take the
listener down and bring it back on the same port.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from influxdb3_standin import control
from influxdb3_standin.catalog import Catalog, validate_database_name
from influxdb3_standin.faults import Faults
from influxdb3_standin.handlers import Api, Counters
from influxdb3_standin.messages import ApiError, Reply, Request
from influxdb3_standin.transport import Listener

logger = logging.getLogger(__name__)

# How long stop() waits for handler threads to notice their connection is gone.
_STOP_DRAIN_SECONDS = 2.0


class StandIn:
    """In-memory InfluxDB 3 Core stand-in serving HTTP on ``host:port`` (port 0: pick one).

    Not InfluxDB: it implements the contract in ``../shared/influxdb3-api.md`` for tests and local
    runs. All switches are thread-safe and apply to the next request. ``poll_interval``: how
    often the serving thread looks for ``stop()`` (requests are served at once whatever it is);
    a process hosting hundreds of stand-ins wants it long, as every wake-up costs a syscall.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        database_limit: int = 5,
        poll_interval: float = 0.05,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock``: the server's own, which stamps soft-deleted names and every answer's Date
        (default: the host's)."""
        if database_limit < 0:
            raise ValueError("database_limit must be >= 0")
        self._host = host
        self._port = port

        # One lock guards data, counters, switches and the set of open connections. Two
        # conditions on it: one wakes stop() and the timed outage (connections closing, outage
        # switched), the other hanging requests and latency sleeps. Apart, because hundreds of
        # requests may hang at once: waking them all on every closed connection starved the
        # serving threads of the lock and the GIL.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        # Serialises start/stop/outage, which block on the serving thread.
        self._lifecycle = threading.RLock()

        self._started = False
        self._stopped = False
        self._outage = False
        self._outage_epoch = 0

        self._catalog = Catalog(database_limit, clock or (lambda: datetime.now(UTC)))
        self._counters = Counters()
        self._api = Api(self._lock, self._catalog, self._counters, token)
        self._faults = Faults(threading.Condition(self._lock))
        self._listener = Listener(self._changed, self._answer, poll_interval, clock)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandIn:
        """Bind and serve in a daemon thread; returns self."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError("StandIn already started")
            self._port = self._listener.bind(self._host, self._port)
            self._started = True
        return self

    def stop(self) -> None:
        """Close the listener and every open client connection; release hanging requests."""
        with self._lifecycle:
            if not self._started or self._stopped:
                return
            with self._lock:
                self._stopped = True
                self._faults.disconnect()
                self._changed.notify_all()  # the timed outage gives up
            self._listener.unbind()
            self._listener.wait_closed(_STOP_DRAIN_SECONDS)

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

    # ---- switches ----------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before answering every request (except /_standin/*)."""
        self._faults.set_latency(seconds)

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
        self._faults.set_faults(error_rate, hang_rate, reset_rate, seed)

    def set_hang(self, on: bool) -> None:
        """While on, every request is accepted and never answered; off releases them unanswered."""
        self._faults.set_hang(on)

    def set_trickle(self, seconds_per_byte: float) -> None:
        """Send each answer's body one byte at a time, this long apart (0: at once)."""
        self._faults.set_trickle(seconds_per_byte)

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
                    self._faults.disconnect()
                self._changed.notify_all()
            if on:
                self._listener.unbind()
            else:
                self._port = self._listener.bind(self._host, self._port)

    def set_token(self, token: str | None) -> None:
        with self._lock:
            self._api.token = token

    def set_database_limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("database limit must be >= 0")
        with self._lock:
            self._catalog.limit = limit

    def _start_timed_outage(self, seconds: float) -> None:
        # A moment's grace, too, for the client to read the answer off the wire.
        timer = threading.Timer(0.1, self._timed_outage, args=(seconds,))
        timer.name = "influxdb3-standin-outage"
        timer.daemon = True
        timer.start()

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
            return sorted(self._catalog.databases)

    def create_calls(self, name: str | None = None) -> int:
        """How many create-database requests reached the handler (any outcome) [for name]."""
        with self._lock:
            counters = self._counters
            return counters.create_calls_total if name is None else counters.create_calls[name]

    def creations(self, name: str) -> int:
        """How many create requests for ``name`` were answered 200 (a new database)."""
        with self._lock:
            return self._counters.created[name]

    def request_count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests received (faulted ones included, /_standin/* excluded), filtered."""
        with self._lock:
            return sum(
                count
                for (request_method, request_path), count in self._counters.requests.items()
                if (method is None or request_method == method.upper())
                and (path is None or request_path == path)
            )

    def rows(self, database: str, table: str) -> list[dict[str, object]]:
        """The rows of a table as SELECT * returns them; [] when there is no such table."""
        with self._lock:
            return self._catalog.rows(database, table)

    def create_database(self, name: str) -> None:
        """Create a database as if by hand (counts toward the limit); ValueError if refused."""
        try:
            validate_database_name(name)
            with self._lock:
                self._catalog.create(name)
        except ApiError as exc:
            raise ValueError(exc.response.body.decode()) from None

    def delete_database(self, name: str) -> None:
        """Soft delete as the API does (renamed NAME-YYYYMMDDTHHMMSS); KeyError if not found."""
        with self._lock:
            self._catalog.soft_delete(name)

    def reset(self) -> None:
        """Drop all data, counters and switches (the token and the database limit stay)."""
        with self._lock:
            self._catalog.clear()
            self._counters.clear()
            self._listener.connections_accepted = 0
            self._faults.reset()
            in_outage = self._outage and not self._stopped
        if in_outage:
            self.set_outage(False)

    def state(self) -> dict[str, object]:
        """A JSON-able snapshot of databases, counters and switches (never the token)."""
        with self._lock:
            catalog, counters = self._catalog, self._counters
            return {
                "databases": sorted(catalog.databases),
                "retention_seconds": {
                    name: database.retention_seconds
                    for name, database in sorted(catalog.databases.items())
                },
                "deleted_databases": sorted(catalog.deleted),
                "database_limit": catalog.limit,
                "auth_enabled": self._api.token is not None,
                "create_calls": dict(sorted(counters.create_calls.items())),
                "create_calls_total": counters.create_calls_total,
                "requests": {
                    f"{method} {path}": count
                    for (method, path), count in sorted(counters.requests.items())
                },
                "connections_accepted": self._listener.connections_accepted,
                "switches": {**self._faults.snapshot(), "outage": self._outage},
            }

    # ---- the request pipeline (called by the transport for every request) --------------------

    def _answer(self, request: Request) -> Reply:
        if request.path.startswith("/_standin/"):
            # Control endpoints: exempt from counting, latency, faults and auth.
            try:
                response, outage_seconds = control.answer(self, self._faults, request)
            except ApiError as exc:
                return Reply(exc.response)
            if outage_seconds is None:
                return Reply(response)
            return Reply(
                response, after=functools.partial(self._start_timed_outage, outage_seconds)
            )

        self._api.count_request(request.method, request.path)
        fate = self._faults.pre_answer()
        if fate == "drop":
            return Reply(None)
        if fate == "reset":
            return Reply(None, reset=True)
        if fate == "error":
            return Reply(self._faults.fault_error())
        answer = self._api.authenticate(request.authorization) or self._api.dispatch(request)
        return Reply(answer, trickle=self._faults.trickle())
