"""Failed credentials, throttled per client address and overall.

Without it the sign-in form and bearer auth let anyone guess operator tokens as fast as the
API answers. A client that failed ``per_client`` times within ``window`` seconds is refused
(429, with ``Retry-After``) until its oldest failure leaves the window; so is everyone once
``overall`` failures fell within it (many addresses guessing together). Only wrong credentials
are refused: a right one always passes, whatever its address did (behind a proxy every client
may share one address, and a stranger's five guesses must not lock out the data plane's location
clients or the operator), and a token of 32 characters or more is not guessed by trying.
Successes are not counted, and a client refused by its own limit adds nothing to the overall
count. In memory, one set per app (:func:`throttle_of`; an app's routes may be shared with
another app of the process, its throttles are not): what an attacker gets is multiplied by the
API's processes, not unlimited.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import HTTPException, Request, status

THROTTLED = (
    "Too many failed credentials from this address, or from all together: wait Retry-After s"
)
MAX_CLIENTS = 10_000  # addresses remembered; the least recently failed are forgotten first
_MADE = threading.Lock()  # two first failures at once make one throttle
_STATE = "tenant_provisioner_throttles"  # an app's throttles, by credential (throttle_of)


class Throttle:
    """Sliding windows of failures: one per client address, one overall."""

    def __init__(
        self,
        per_client: int = 5,
        overall: int = 100,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_client, self._overall, self._window, self._clock = (
            per_client,
            overall,
            window,
            clock,
        )
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def retry_after(self, client: str, *, overall: bool = True) -> float | None:
        """Seconds ``client`` must wait before its next try, or None if it may try now;
        ``overall=False``: by its own failures only."""
        with self._lock:
            now = self._clock()
            own = self._recent(self._clients.get(client), now)
            if own is not None and len(own) >= self._per_client:
                return own[0] + self._window - now
            if not overall:
                return None
            every = self._recent(self._all, now)
            if every is not None and len(every) >= self._overall:
                return every[0] + self._window - now
            return None

    def refuse(self, client: str) -> float | None:
        """A wrong credential from ``client``: the seconds it must wait (429), or None (401).
        Counted, unless its own limit refused it."""
        if (own := self.retry_after(client, overall=False)) is not None:
            return own
        wait = self.retry_after(client)
        self.failed(client)
        return wait

    def failed(self, client: str) -> None:
        """Count a failed credential from ``client``."""
        with self._lock:
            now = self._clock()
            own = self._clients.pop(client, None) or deque()
            self._recent(own, now)
            own.append(now)
            self._clients[client] = own  # most recently failed last
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            self._all.append(now)
            self._recent(self._all, now)

    def _recent(self, times: deque[float] | None, now: float) -> deque[float] | None:
        if times is not None:
            while times and times[0] <= now - self._window:
                times.popleft()
        return times


def throttle_of(request: Request, credential: str) -> Throttle:
    """The throttle of ``credential`` (the variable holding the token guessed) in
    the app serving ``request``, made on its first failure and kept in the app's state (under a
    name of ours: the UI mounts our routers in its own app): the routes' code is built once per
    process (``api_hooks.app``), the failures they count belong to their app."""
    state = request.app.state
    with _MADE:
        throttles: dict[str, Throttle] | None = getattr(state, _STATE, None)
        if throttles is None:
            throttles = {}
            setattr(state, _STATE, throttles)
        return throttles.setdefault(credential, Throttle())


def client_of(request: Request) -> str:
    """The address failures are counted by (the proxy's, unless uvicorn trusts its
    ``X-Forwarded-For``: ``FORWARDED_ALLOW_IPS``, docs/security.md)."""
    return request.client.host if request.client else "-"


def throttled(wait: float) -> HTTPException:
    """The 429 for a client that must wait ``wait`` seconds."""
    seconds = str(math.ceil(wait))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many failed credentials; try again in {seconds} s",
        headers={"Retry-After": seconds},
    )
