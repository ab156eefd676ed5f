"""The location clients: the map (``locations_client.map``) kept fresh in a daemon thread
(``LocationClient``) or an asyncio task (``AsyncLocationClient``), read from memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time

from locations_client.map import PAGE_SIZE, LocationServiceError, Resolution, _Map

logger = logging.getLogger(__name__)


class LocationClient:
    """The location map for a threaded (or plain) service; refreshes in a daemon thread."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        refresh_seconds: float | None = None,
        timeout: float = 5.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        """``refresh_seconds``: None follows the service's hint (LOCATIONS_REFRESH_SECONDS)."""
        self._map = _Map(base_url, token, timeout, page_size)
        self._refresh_seconds = refresh_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, wait: bool = True) -> LocationClient:
        """Load the map (raising LocationServiceError if ``wait`` and the service cannot be
        reached), then keep it fresh in the background; returns self."""
        if wait:
            self._map.refresh()
        self._thread = threading.Thread(target=self._run, name="locations", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop refreshing (the map stays readable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LocationClient:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def resolve(self, tenant_id: str, *, stale_ok: bool = False) -> Resolution:
        """Where ``tenant_id``'s database is: Location, NotReady or UNKNOWN, from memory; Stale
        when the map is older than the service's ``max_staleness_seconds`` (unless
        ``stale_ok``: reads may use it, writes must not)."""
        return self._map.resolve(tenant_id, stale_ok)

    def refresh(self) -> int:
        """Refresh now; the number of locations that changed. Raises LocationServiceError."""
        return self._map.refresh()

    @property
    def version(self) -> int:
        """The map's version this client holds."""
        return self._map.version

    @property
    def staleness(self) -> float:
        """Seconds since the last successful refresh asked for its last page (infinity before
        the first): the map holds every change visible then."""
        return self._map.staleness

    @property
    def last_error(self) -> str | None:
        """Why the last refresh failed, or None after a success."""
        return self._map.last_error

    def _run(self) -> None:
        # Refreshes are spaced from their starts, so one every interval however long each takes
        # (the deletion wait, LOCATIONS_MAX_STALENESS_SECONDS, counts on it); the first at once
        # when started without waiting for it.
        started = _last_start(self._map)
        while not self._stop.wait(_until_next(started, self._refresh_seconds, self._map)):
            started = time.monotonic()
            try:
                self._map.refresh()
            except LocationServiceError as exc:
                logger.warning("location refresh failed; serving version %d: %s", self.version, exc)
            except Exception:  # never let the refresh thread die: the map would freeze
                logger.exception(
                    "location refresh failed unexpectedly; serving version %d", self.version
                )


class AsyncLocationClient:
    """The location map for an asyncio service: the refresh runs as a task (its HTTP calls in
    a worker thread, so the event loop never waits on the network)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        refresh_seconds: float | None = None,
        timeout: float = 5.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._map = _Map(base_url, token, timeout, page_size)
        self._refresh_seconds = refresh_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, wait: bool = True) -> AsyncLocationClient:
        """Load the map (raising LocationServiceError if ``wait`` and the service cannot be
        reached), then keep it fresh in a task; returns self."""
        if wait:
            await asyncio.to_thread(self._map.refresh)
        self._task = asyncio.create_task(self._run(), name="locations")
        return self

    async def close(self) -> None:
        """Stop refreshing (the map stays readable)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> AsyncLocationClient:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def resolve(self, tenant_id: str, *, stale_ok: bool = False) -> Resolution:
        """As :meth:`LocationClient.resolve`, from memory (no await: it never waits)."""
        return self._map.resolve(tenant_id, stale_ok)

    async def refresh(self) -> int:
        """Refresh now; the number of locations that changed. Raises LocationServiceError."""
        return await asyncio.to_thread(self._map.refresh)

    @property
    def version(self) -> int:
        """The map's version this client holds."""
        return self._map.version

    @property
    def staleness(self) -> float:
        """Seconds since the last successful refresh asked for its last page (infinity before
        the first): the map holds every change visible then."""
        return self._map.staleness

    @property
    def last_error(self) -> str | None:
        """Why the last refresh failed, or None after a success."""
        return self._map.last_error

    async def _run(self) -> None:
        started = _last_start(self._map)
        while True:
            await asyncio.sleep(_until_next(started, self._refresh_seconds, self._map))
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._map.refresh)
            except LocationServiceError as exc:
                logger.warning("location refresh failed; serving version %d: %s", self.version, exc)
            except Exception:  # never let the refresh task die: the map would freeze
                logger.exception(
                    "location refresh failed unexpectedly; serving version %d", self.version
                )


def _last_start(held: _Map) -> float:
    """When the refreshes are spaced from at first: now, or never for a map not loaded yet (a
    client started without waiting would otherwise know no tenant for a whole interval)."""
    return time.monotonic() if held.staleness < math.inf else -math.inf


def _until_next(started: float, chosen: float | None, held: _Map) -> float:
    """Seconds until the next refresh is due, ``started`` being when the last one began."""
    interval = chosen if chosen is not None else held.refresh_seconds
    return max(0.0, started + (interval or 2.0) - time.monotonic())
