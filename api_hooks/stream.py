"""Every tenant's events in the global order: ``GET /operator/events`` as a page of JSON, or,
for ``Accept: text/event-stream``, as a Server-Sent Events stream that resumes from
``Last-Event-ID`` with no gap and no duplicate (the reader: ``worker.event_stream``).

Each event is sent as ``id: <cursor>``, ``event: <type>``, ``data: <CloudEvent JSON>``; the
browser's EventSource sends the last id back when it reconnects. A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream and finds a vanished client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypedDict

from anyio import to_thread

from api_hooks.errors import InvalidCursor
from api_hooks.tenants import validate_tenant_id
from worker.db import get_engine
from worker.event_reads import (
    MAX_LIMIT,
    TYPE_PREFIX,
    BadCursor,
    check_not_ahead,
    events_after,
    horizon,
    page_size,
    parse_cursor,
    tenant_page,
)
from worker.event_stream import Behind, Cursor, cursor_text, get_hub
from worker.events import EVENT_TYPES

KEEPALIVE_SECONDS = 15.0
RECONNECT_MS = 2000  # the EventSource's wait before it reconnects
MAX_STREAMS = 1000  # per process: one more is refused (503), the others keep their pace
MAX_TYPES = len(EVENT_TYPES)
_open_streams = 0
# Reentrant: a collection inside a held section may run a finalizer that releases a slot.
_count_lock = threading.RLock()


class EventsPageBody(TypedDict):
    """A page of every tenant's events in the global order."""

    events: list[dict[str, Any]]
    next: str
    more: bool


@dataclass(frozen=True)
class Selection:
    """Which events a reader wants, and after which one (checked: see :func:`selection`)."""

    cursor: Cursor
    tenant: str | None
    types: frozenset[str]

    def wants(self, event: dict[str, Any]) -> bool:
        if self.tenant is not None and event.get("subject") != self.tenant:
            return False
        return not self.types or str(event["type"]).removeprefix(TYPE_PREFIX) in self.types


class TooManyStreams(Exception):
    """This process already serves MAX_STREAMS streams."""


def selection(
    after: str | None, last_event_id: str | None, tenant: str | None, types: Collection[str]
) -> Selection:
    """The reader's cursor (``Last-Event-ID`` wins over ``after``: it is where a reconnecting
    EventSource stopped; neither: from now on, ``after=0-0``: from the first event kept), its
    tenant and types (with or without the ``io.tenant-provisioner.`` prefix). Raises
    InvalidCursor or InvalidTenantId, naming what is wrong."""
    given = last_event_id if last_event_id not in (None, "") else after
    source = "Last-Event-ID" if last_event_id not in (None, "") else "after"
    try:
        cursor = None if given in (None, "") else parse_cursor(given)
    except BadCursor as exc:
        raise InvalidCursor(f"{source}: {exc}") from exc
    if len(types) > MAX_TYPES:
        raise InvalidCursor(f"at most {MAX_TYPES} types")
    wanted = frozenset(t.removeprefix(TYPE_PREFIX) for t in types)
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise InvalidCursor(
            f"unknown event type {unknown[0][:60]!r}; the types are: {', '.join(EVENT_TYPES)}"
        )
    if tenant is not None:
        tenant = validate_tenant_id(tenant)
    with get_engine().connect() as conn:
        below = horizon(conn)
    if cursor is None:
        cursor = (below, 0)
    try:  # or a stream waits, silent, until the log catches up with it
        check_not_ahead(cursor, below)
    except BadCursor as exc:
        raise InvalidCursor(f"{source}: {exc}") from exc
    return Selection(cursor, tenant, wanted)


def events_page(chosen: Selection, limit: str | int | None = None) -> EventsPageBody:
    """One page of the events ``chosen`` selects (the JSON answer of ``GET
    /operator/events``); ``next`` is the cursor to ask with next. Raises InvalidCursor."""
    try:
        page = _read(chosen, chosen.cursor, page_size(limit))
    except BadCursor as exc:
        raise InvalidCursor(str(exc)) from exc
    return {"events": page.events, "next": page.next, "more": page.more}


def check_limit(limit: str | None) -> None:
    """A stream has no pages, but a bad ``limit`` is refused as a page's is (InvalidCursor)."""
    try:
        page_size(limit)
    except BadCursor as exc:
        raise InvalidCursor(str(exc)) from exc


def frame(event: dict[str, Any]) -> bytes:
    """One event as an SSE message."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


class StreamSlot:
    """One stream's place in this process's MAX_STREAMS, taken when its request is answered -
    so a burst of requests cannot all pass before any body has started - and given back once:
    when its body ends, or, when the body never ran or was left suspended (a client gone),
    when that body is collected, on whichever thread collects it (hence the lock)."""

    def __init__(self) -> None:
        global _open_streams  # noqa: PLW0603 - a per-process count
        with _count_lock:
            full = _open_streams >= MAX_STREAMS
            if not full:
                _open_streams += 1
        if full:  # raised outside the lock: nothing that may start a collection inside it
            raise TooManyStreams
        self._held = True

    def release(self) -> None:
        global _open_streams  # noqa: PLW0603
        with _count_lock:
            if self._held:
                self._held = False
                _open_streams -= 1


def reserve(stream: Callable[[StreamSlot], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """``stream(slot)``, its slot taken now. Raises TooManyStreams (answer 503)."""
    slot = StreamSlot()
    body = stream(slot)
    weakref.finalize(body, slot.release)
    return body


async def event_stream(chosen: Selection, slot: StreamSlot) -> AsyncIterator[bytes]:
    """The SSE body: events after the cursor, then each one as it becomes readable."""
    token, cursor = None, chosen.cursor
    try:  # from the first line: the slot is given back whatever raises
        hub = get_hub()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        token = hub.subscribe(lambda: loop.call_soon_threadsafe(ready.set))
        # The start is the stream's first id: an EventSource that reconnects before any event
        # of its selection came sends it back, and resumes from here, not from a later "now".
        sent = cursor_text(cursor)
        yield f"retry: {RECONNECT_MS}\nid: {sent}\n\n".encode()
        written = loop.time()  # a keepalive is due KEEPALIVE_SECONDS after the last write
        while True:
            ready.clear()
            more = False
            try:
                events, cursor = hub.take(cursor)
            except Behind:  # older than the reader keeps (or it has not read yet): the table
                page = await to_thread.run_sync(_read, chosen, cursor)
                events, cursor, more = page.events, parse_cursor(page.next), page.more
            wanted = [event for event in events if chosen.wants(event)]
            if wanted:
                yield b"".join(map(frame, wanted))
                sent, written = str(wanted[-1]["id"]), loop.time()
            if more:
                continue
            if not hub.wait_started(0):
                await to_thread.run_sync(hub.wait_started, 1.0)
                continue
            # Timed from the last write, not the last wake-up: a stream whose filter skips a
            # busy log's every event is woken often, but writes nothing a proxy would see.
            idle = loop.time() - written
            if idle < KEEPALIVE_SECONDS:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), KEEPALIVE_SECONDS - idle)
            if loop.time() - written >= KEEPALIVE_SECONDS:
                # With the id past the events the selection skipped since: a reconnect does
                # not read them again (an id-only message fires no event in an EventSource).
                moved, sent = cursor_text(cursor) != sent, cursor_text(cursor)
                yield (": keepalive\n" + (f"id: {sent}\n" if moved else "") + "\n").encode()
                written = loop.time()
    finally:
        if token is not None:
            hub.unsubscribe(token)
        slot.release()


def _read(chosen: Selection, cursor: Cursor, limit: int = MAX_LIMIT) -> Any:
    """The selection's events after ``cursor``, from the table (the ring's source of truth)."""
    with get_engine().connect() as conn:
        types = sorted(chosen.types) or None
        return events_after(conn, cursor_text(cursor), limit, chosen.tenant, types)


async def tenant_stream(
    tenant_id: str, after_seq: int, slot: StreamSlot
) -> AsyncGenerator[dict[str, Any], None]:
    """One tenant's events after ``after_seq`` in its own sequence, as they are committed
    (the console's timeline): read by ``seq`` whenever the reader shows an event of it.
    Counted with the event streams: one budget of MAX_STREAMS per process (``slot``)."""
    token = None
    try:  # from the first line: the slot is given back whatever raises
        hub = get_hub()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        token = hub.subscribe(lambda: loop.call_soon_threadsafe(ready.set))
        while not hub.wait_started(0):
            await to_thread.run_sync(hub.wait_started, 1.0)
        # Where the reader is now, taken before reading the tenant's events: any event this
        # read misses committed after the reader's last look, so it lies after this cursor.
        cursor, sent = hub.end(), loop.time()
        while True:
            ready.clear()
            try:
                page = await to_thread.run_sync(tenant_events_after, tenant_id, after_seq)
            except BadCursor:  # its events went (deleted, made again) while it was followed
                return
            for event in page:
                after_seq = max(after_seq, int(event.get("tenantseq", 0)))
                yield event
                sent = loop.time()
            while True:
                try:
                    events, cursor = hub.take(cursor)
                except Behind:  # fell out of the ring: read the tenant's events again
                    cursor = hub.end()
                    break
                if any(e.get("subject") == tenant_id for e in events):
                    break
                # A keepalive KEEPALIVE_SECONDS after the last thing sent, however often other
                # tenants' events wake this: the caller's checks run at each (its session's)
                try:
                    await asyncio.wait_for(ready.wait(), sent + KEEPALIVE_SECONDS - loop.time())
                except TimeoutError:
                    yield {}
                    sent = loop.time()
                ready.clear()
    finally:
        if token is not None:
            hub.unsubscribe(token)
        slot.release()


def tenant_events_after(tenant_id: str, after_seq: int) -> list[dict[str, Any]]:
    with get_engine().connect() as conn:
        page = tenant_page(conn, tenant_id, after_seq, MAX_LIMIT)
    return [] if page is None else page.events


__all__ = ["MAX_LIMIT", "Selection", "events_page", "frame", "selection"]
