"""The location map in memory and how it is kept: what a lookup answers, the pages of
``/locations`` applied by version, and every check of what the service sent (see the package
doc). The clients (``locations_client.client``) run its refreshes."""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final


def _clock() -> float:
    """Seconds on a clock that goes on while the host is suspended (Linux's CLOCK_BOOTTIME;
    elsewhere monotonic): a writer waking from a long sleep must see its map as stale, not
    write for a tenant deleted meanwhile (InfluxDB would make its database again)."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", None)

logger = logging.getLogger(__name__)

PAGE_SIZE: Final = 5000
MAX_RELOADS: Final = 3  # a map whose identity changes under every whole load is an error
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024  # a page of 10,000 locations is about 3 MB
# Set by the service when more pages follow: where the next one starts.
NEXT_SINCE_HEADER: Final = "X-Locations-Next-Since"


@dataclass(frozen=True, slots=True)
class Location:
    """Where to write and read the tenant's telemetry: database ``database`` on ``url``."""

    tenant_id: str
    node: str
    url: str
    incarnation: str | None
    prefix: str

    @property
    def database(self) -> str:
        """The tenant's InfluxDB database, e.g. ``telemetry_acme``."""
        return self.prefix + self.tenant_id


@dataclass(frozen=True, slots=True)
class NotReady:
    """The tenant exists but must not be written to now (``state`` says why)."""

    tenant_id: str
    state: str


class Unknown:
    """No such tenant in the map (never created, or deleted)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = Unknown()


@dataclass(frozen=True, slots=True)
class Stale:
    """The map is older than the service's ``max_staleness_seconds``: a deletion may have been
    published since, and its database is deleted that long after. Write nowhere (a write to a
    deleted tenant's server would make its database again). ``resolve(id, stale_ok=True)``
    answers from the map as it is, for reads, which make nothing."""

    tenant_id: str
    staleness: float  # seconds since the last successful refresh asked for its last page


Resolution = Location | NotReady | Unknown | Stale


class LocationServiceError(Exception):
    """``/locations`` answered something other than a page (the message says what)."""


class _Map:
    """The map and how it is kept; shared by the sync and the async client."""

    def __init__(self, base_url: str, token: str, timeout: float, page_size: int) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"the location service URL must be http(s): {base_url!r}")
        self._url = base_url.rstrip("/") + "/locations"
        token = token.strip()  # read from a file, it may end in a newline
        if not token or not all("!" <= c <= "~" for c in token):
            # (never shown: an invalid header value would be, in urllib's error)
            raise ValueError("the location service token must be printable ASCII, no spaces")
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout, self._page_size = timeout, page_size
        self._entries: dict[str, Location | NotReady] = {}
        self._nodes: dict[str, str] = {}  # name: URL
        self._names: dict[str, str] = {}  # name: the one string kept for it
        self._identity: tuple[str, dict[str, str], str] | None = None  # what entries assume
        self._prefix = ""
        self.version = 0
        self.refresh_seconds: float | None = None  # the service's hint, once known
        self.max_staleness_seconds: float | None = None
        self.last_error: str | None = None
        # _clock() when the last successful refresh asked for its last page: the map
        # holds every change visible then (a whole load of a million takes seconds before it)
        self._refreshed_at: float | None = None
        self._asked_at = 0.0  # when the page being applied was asked for
        self._lock = threading.Lock()  # one refresh at a time

    @property
    def staleness(self) -> float:
        if self._refreshed_at is None:
            return math.inf
        return _clock() - self._refreshed_at

    def resolve(self, tenant_id: str, stale_ok: bool) -> Resolution:
        """Where ``tenant_id`` is, by the map in memory; Stale when it is older than the
        deletion wait (fail closed), unless ``stale_ok``."""
        limit = self.max_staleness_seconds
        if not stale_ok and limit is not None and (staleness := self.staleness) > limit:
            return Stale(tenant_id, staleness)
        return self._entries.get(tenant_id, UNKNOWN)

    def refresh(self) -> int:
        """Apply every change since our version (the whole map the first time); returns how
        many locations changed. Raises LocationServiceError (the map is kept as it was)."""
        with self._lock:
            try:
                return self._refresh()
            except LocationServiceError as exc:
                self.last_error = str(exc)
                raise

    def _refresh(self) -> int:
        for _ in range(MAX_RELOADS):
            whole = self._identity is None  # the first load, or what it assumed changed
            try:
                changed = self._apply_pages(0 if whole else self.version, reload=whole)
            except BaseException:
                if whole:
                    # Cut short: its identity is taken from its first page, its map only at
                    # the end. The entries held are the old map's; the next refresh must
                    # load it whole again, not apply changes onto those.
                    self._identity = None
                raise
            if changed is not None:
                break
        else:
            raise LocationServiceError("the location map kept changing identity while loading")
        self._refreshed_at = self._asked_at
        self.last_error = None
        return changed

    def _apply_pages(self, since: int, *, reload: bool) -> int | None:
        """Apply the pages after ``since`` (into a new map when ``reload``, swapped in at the
        end); None when the map must be loaded whole again (another map, other servers)."""
        building: dict[str, Location | NotReady] | None = {} if reload else None
        changed = 0
        # While one page is parsed the next is already on its way (its version is in the
        # answer's headers): the server's work and ours overlap on a whole-map load.
        with ThreadPoolExecutor(1, thread_name_prefix="locations-page") as fetching:
            coming = fetching.submit(self._fetch, since, reload)
            while True:
                status, ahead, body, self._asked_at = coming.result()
                if status in (410, 400):
                    # 410: tombstones we never saw were pruned; 400: our version is ahead of
                    # this map (a restored database). Either way: load it whole.
                    logger.warning("location map version %d not servable; loading it whole", since)
                    self._identity = None
                    return None
                if ahead is not None:
                    coming = fetching.submit(self._fetch, ahead, reload)
                page = _parse(body, since)
                if self._identity_changed(page):
                    self._identity = None  # the next pass loads it whole, with the new one
                    return None
                if building is not None and since == 0:
                    self._take_identity(page)
                entries = self._entries if building is None else building
                for item in page["locations"]:
                    if item["deleted"]:
                        entries.pop(item["tenant_id"], None)
                    else:
                        entries[item["tenant_id"]] = self._entry(item)
                    changed += 1
                since = page["next_since"]
                if not page["more"]:
                    break
                if ahead != since:  # no header, or not this page's: ask from the body's
                    coming = fetching.submit(self._fetch, since, reload)
        if building is not None:
            self._entries = building
        self.version = since
        return changed

    def _identity_changed(self, page: Mapping[str, Any]) -> bool:
        """Whether what our entries were built on changed: the map (its epoch), the servers
        and their URLs, or the prefix. Then only a whole reload is right: a server that left
        the nodes file and came back leaves no change of its tenants to apply."""
        self.refresh_seconds = _bounded(page["refresh_seconds"], 0.1, 3600.0)
        self.max_staleness_seconds = _bounded(page["max_staleness_seconds"], 0.0, 86400.0)
        if self._identity is None:
            return False
        return _identity(page) != self._identity

    def _take_identity(self, page: Mapping[str, Any]) -> None:
        self._identity = _identity(page)
        self._nodes = self._identity[1]
        self._prefix = page["database_prefix"]
        self._names = {name: name for name in self._nodes}

    def _entry(self, item: Mapping[str, Any]) -> Location | NotReady:
        tenant_id = item["tenant_id"]
        node = item["node"]
        if not item["ready"] or node is None:
            return NotReady(tenant_id, sys.intern(str(item["state"])))
        url = self._nodes.get(node)
        if url is None:
            return NotReady(tenant_id, "node_not_configured")
        # One string per server name, not one per tenant: a million locations share a few.
        return Location(tenant_id, self._names[node], url, item["incarnation"], self._prefix)

    def _fetch(self, since: int, whole: bool) -> tuple[int, int | None, bytes, float]:
        """One page's status, the version the page after it starts from (when more follow
        and the service says so in its headers), its body, unparsed, and when it was asked.
        ``whole``: a page of a whole load, which tombstones pruned meanwhile do not concern."""
        asked = _clock()
        params = {"since": since, "limit": self._page_size} | ({"whole": 1} if whole else {})
        query = urllib.parse.urlencode(params)
        # http(s) only: checked in __init__
        request = urllib.request.Request(f"{self._url}?{query}", headers=self._headers)  # noqa: S310
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self._timeout) as answer:
                body = answer.read(MAX_ANSWER_BYTES + 1)
                status, headers = answer.status, answer.headers
        except urllib.error.HTTPError as exc:
            if exc.code == 410 or (exc.code == 400 and since > 0):
                return exc.code, None, b"", asked
            detail = _detail(exc.read(4096))
            raise LocationServiceError(f"/locations answered {exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:  # refused, timed out, reset, bad URL
            why = str(exc).replace(self._token, "[token]")  # whatever urllib quoted of ours
            raise LocationServiceError(f"/locations unreachable: {why}") from None
        if len(body) > MAX_ANSWER_BYTES:
            raise LocationServiceError("/locations answered more than a page can be")
        ahead = headers.get(NEXT_SINCE_HEADER, "")  # a hint: the body says it too
        hinted = ahead.isascii() and ahead.isdigit() and len(ahead) <= 19  # ("²" is a digit)
        return status, int(ahead) if hinted else None, body, asked


def _parse(body: bytes, since: int) -> dict[str, Any]:
    try:
        page = json.loads(body)
        _check(page, since)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise LocationServiceError(f"/locations answered garbage: {exc}") from None
    return page  # type: ignore[no-any-return]


def _identity(page: Mapping[str, Any]) -> tuple[str, dict[str, str], str]:
    nodes = {node["name"]: node["url"] for node in page["nodes"]}
    return page["epoch"], nodes, page["database_prefix"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Only the configured URL is ever called: a redirect is an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check(page: Any, since: int) -> None:
    """Every field a page needs, of its type, before any of it is applied: a service (or
    whatever answers in its place) that sends less changes nothing we hold."""
    _typed(page, dict, "the page")
    for key, kind in (("more", bool), ("database_prefix", str), ("epoch", str)):
        _typed(page.get(key), kind, key)
    for key in ("refresh_seconds", "max_staleness_seconds"):
        if not _finite(_typed(page.get(key), (int, float), key)):  # (JSON may say NaN, 1e999)
            raise ValueError(f"{key} is not a finite number")
    _typed(page.get("next_since"), int, "next_since")
    if page["next_since"] < since or (page["more"] and page["next_since"] == since):
        raise ValueError(f"next_since {page['next_since']} does not move on from {since}")
    for node in _typed(page.get("nodes"), list, "nodes"):
        _typed(node, dict, "a node")
        _typed(node.get("name"), str, "a node's name")
        _typed(node.get("url"), str, "a node's url")
    for item in _typed(page.get("locations"), list, "locations"):
        # What json.loads makes is of these exact types: one test per field on a whole load
        # of a million; the field at fault is named below.
        if (
            type(item) is dict
            and type(item.get("tenant_id")) is str
            and type(item.get("deleted")) is bool
            and type(item.get("ready")) is bool
            and type(item.get("state")) in _TEXT_OR_NULL
            and type(item.get("node")) in _TEXT_OR_NULL
            and type(item.get("incarnation")) in _TEXT_OR_NULL
        ):
            continue
        _typed(item, dict, "a location")
        _typed(item.get("tenant_id"), str, "tenant_id")
        _typed(item.get("deleted"), bool, "deleted")
        _typed(item.get("ready"), bool, "ready")
        for key in ("state", "node", "incarnation"):
            _typed(item.get(key), (str, type(None)), key)


_TEXT_OR_NULL: Final = frozenset((str, type(None)))


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{what} is missing or not of its type")
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _bounded(value: float, low: float, high: float) -> float:
    """A hint from the service (finite: ``_check``), kept sane: a zero or negative interval
    would spin."""
    return min(max(float(value), low), high)


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body)["detail"])[:200]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "(no detail)"
