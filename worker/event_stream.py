"""The event log, live: one reader per process that follows the global order and wakes the
streams (``GET /operator/events``, the console's timeline) when events arrive.

The table is the truth, notifications only say "look again". A thread ``LISTEN``s on
``tenant_events`` (migration 0012: one notification per committed transaction that wrote
events, its payload the transaction's id), reads what became readable with
:func:`worker.event_reads.events_after` from its own cursor, and keeps the last pages in a ring:
``(start, end, events)`` with every page's start its predecessor's end, so the ring holds
*every* event between its first start and its last end. A stream whose cursor falls inside
that range takes the events after its cursor from the ring, however many streams there are:
with 100 clients, one query per change, not 100. A stream whose cursor is older than the ring
(a client resuming after a while) catches up from the table first, then joins.

An event becomes readable once every transaction older than its own has ended (migration
0011), which may be a few milliseconds after its notification: a notified transaction not yet
below the horizon is looked for again after 2, 4, 8, ... ms (at most 200 ms); with no
notification at all, the table is read every ``IDLE_POLL_SECONDS`` anyway, so a lost
connection or a missed notification delays events, it loses none. The reader runs while
streams are open and stops ``IDLE_STOP_SECONDS`` after the last one closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from worker.db import get_engine
from worker.event_reads import MAX_LIMIT, events_after, horizon, parse_cursor
from worker.redaction import redact
from worker.settings import get_settings

logger = logging.getLogger(__name__)

CHANNEL = "tenant_events"  # migration 0012
IDLE_POLL_SECONDS = 1.0
IDLE_STOP_SECONDS = 10.0
RING_EVENTS = 20_000  # events kept for streams that are a little behind
_FIRST_RECHECK = 0.002
_MAX_RECHECK = 0.2

Cursor = tuple[int, int]


def cursor_text(cursor: Cursor) -> str:
    """A cursor as the API writes it: ``"<xid>-<id>"``."""
    return f"{cursor[0]}-{cursor[1]}"


@dataclass(frozen=True)
class Chunk:
    """Every event after ``start`` up to ``end`` in the global order (``end`` included)."""

    start: Cursor
    end: Cursor
    events: tuple[dict[str, Any], ...]


@dataclass
class _Ring:
    chunks: deque[Chunk] = field(default_factory=deque)
    size: int = 0

    def add(self, chunk: Chunk) -> None:
        last = self.chunks[-1] if self.chunks else None
        if last is not None and not chunk.events and not last.events:
            self.chunks[-1] = Chunk(last.start, chunk.end, ())  # the horizon moved, no event
        else:
            self.chunks.append(chunk)
            self.size += len(chunk.events)
        while self.size > RING_EVENTS and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft().events)


class Behind(Exception):
    """The cursor is older than what the reader keeps: read the table from it."""


class EventHub:
    """The process's reader of the event log (see the module docstring). Streams call
    :meth:`subscribe` with a callback (run in the reader's thread: it must only schedule a
    wake-up, e.g. ``loop.call_soon_threadsafe``), :meth:`take` to read, :meth:`unsubscribe`."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._lock = threading.Lock()
        self._ring = _Ring()
        self._subscribers: dict[int, Callable[[], object]] = {}
        self._thread: threading.Thread | None = None
        self._started = threading.Event()  # the ring has its first end: take() can answer
        self._last_subscriber_left = time.monotonic()

    # -- the streams' side --------------------------------------------------------------------

    def subscribe(self, wake: Callable[[], object]) -> int:
        """Register a stream; its ``wake`` is called whenever new events are in the ring."""
        with self._lock:
            token = id(wake)
            self._subscribers[token] = wake
            if self._thread is None:  # none, or the last one stopped (see _idle)
                self._ring = _Ring()  # a new reader starts at the horizon: no gap in the ring
                self._started.clear()
                self._thread = threading.Thread(
                    target=self._run, name="event-stream-reader", daemon=True
                )
                self._thread.start()
        return token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers.pop(token, None)
            if not self._subscribers:
                self._last_subscriber_left = time.monotonic()

    def wait_started(self, timeout: float) -> bool:
        """Whether the reader has read the log once (streams wait for it before :meth:`take`)."""
        return self._started.wait(timeout)

    def end(self) -> Cursor:
        """Where the reader is: every event up to here is in the ring or was before it."""
        with self._lock:
            return self._ring.chunks[-1].end if self._ring.chunks else (0, 0)

    def take(self, cursor: Cursor) -> tuple[list[dict[str, Any]], Cursor]:
        """The events after ``cursor`` that the ring holds, and the cursor after them (the
        ring's end, or ``cursor`` itself when it is ahead of the ring). Raises Behind when
        ``cursor`` is older than the ring's first start."""
        newer: list[Chunk] = []
        with self._lock:
            chunks = self._ring.chunks
            if not chunks or cursor < chunks[0].start:
                raise Behind
            end = chunks[-1].end
            # From the newest back to the cursor: a stream that keeps up reads a chunk or two,
            # not the whole ring (a thousand streams wake at each commit).
            for chunk in reversed(chunks):
                if chunk.end <= cursor:
                    break
                newer.append(chunk)
        if not newer:  # at or ahead of the ring's end
            return [], max(cursor, end)
        events = [
            event
            for chunk in reversed(newer)
            for event in chunk.events
            if parse_cursor(event["id"]) > cursor
        ]
        return events, end

    # -- the reader -----------------------------------------------------------------------

    def _run(self) -> None:
        cursor: Cursor | None = None
        while True:
            try:
                self._follow(cursor)
                return  # no stream for IDLE_STOP_SECONDS
            except Exception as exc:  # Postgres away: the streams wait, then resume
                logger.warning("event stream reader: %s; reconnecting in 1 s", redact(str(exc)))
                cursor = self.end() if self._started.is_set() else None
                time.sleep(1.0)
                if self._idle():
                    return

    def _follow(self, cursor: Cursor | None) -> None:
        url = make_url(self._url).set(drivername="postgresql")
        with psycopg.connect(
            url.render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=5,
            application_name="tenant-provisioner events",
        ) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            if cursor is None:
                with get_engine().connect() as conn:
                    cursor = (horizon(conn), 0)  # streams older than this read the table
                with self._lock:
                    self._ring.add(Chunk(cursor, cursor, ()))
            self._started.set()
            waiting: set[int] = set()  # notified transactions not yet below the horizon
            recheck = _FIRST_RECHECK
            while True:
                cursor = self._read(cursor)
                waiting = {xid for xid in waiting if xid >= cursor[0]}
                timeout = IDLE_POLL_SECONDS
                if waiting:
                    timeout, recheck = recheck, min(recheck * 2, _MAX_RECHECK)
                else:
                    recheck = _FIRST_RECHECK
                for note in listener.notifies(timeout=timeout, stop_after=1):
                    if note.payload.isdigit():
                        waiting.add(int(note.payload))
                if self._idle():
                    return

    def _read(self, cursor: Cursor) -> Cursor:
        """Read everything readable after ``cursor`` into the ring; wake the streams."""
        new = False
        with get_engine().connect() as conn:
            while True:
                page = events_after(conn, cursor_text(cursor), MAX_LIMIT)
                end = parse_cursor(page.next)
                with self._lock:
                    self._ring.add(Chunk(cursor, end, tuple(page.events)))
                new = new or bool(page.events)
                cursor = end
                if not page.more:
                    break
        if new:
            with self._lock:
                wakes = list(self._subscribers.values())
            for wake in wakes:
                wake()
        return cursor

    def _idle(self) -> bool:
        """Whether to stop: no stream for a while. Decided under the lock that subscribe()
        takes, which starts a new reader from then on."""
        with self._lock:
            if self._subscribers:
                return False
            if time.monotonic() - self._last_subscriber_left <= IDLE_STOP_SECONDS:
                return False
            self._thread = None
            return True


_hubs: dict[str, EventHub] = {}
_hubs_lock = threading.Lock()


def get_hub() -> EventHub:
    """This process's reader for the configured database."""
    url = get_settings().database_url
    with _hubs_lock:
        hub = _hubs.get(url)
        if hub is None:
            hub = _hubs[url] = EventHub(url)
        return hub
