"""Sending one webhook: signed per the Standard Webhooks spec, POSTed once, never redirected.

Headers: ``webhook-id`` (the CloudEvent's id, the same on every retry: receivers drop
duplicates by it), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,`` then the base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``
with the key the ``whsec_`` secret encodes - one signature per key, space separated, while a
key is rotated. The body is the CloudEvent as compact JSON, the very bytes signed.

Only 2xx counts as delivered. A 3xx is a failure (never followed: only configured URLs are
called), and so is every other status, a refused connection, a reset or a timeout. No proxy,
``.netrc`` or other environment setting applies (``trust_env`` off).

One deadline bounds each POST: ``CONNECT_TIMEOUT`` plus the read timeout from its start, name
lookup and connecting included, to the answer's status line and headers (the body is not
read). The HTTP client's timeouts bound each wait for a byte only, so a receiver dripping a
header byte a second would hold a sender thread, and the dispatch run, for ever: past the
deadline a watchdog shuts the request's socket from outside (or as soon as it is connected).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from worker.webhook_config import Endpoint

USER_AGENT = "tenant-provisioner-webhooks"
CONNECT_TIMEOUT = 3.0  # s; the read timeout is WEBHOOKS_READ_TIMEOUT_SECONDS
MAX_RETRY_AFTER = 86400.0  # a Retry-After beyond a day is not believed
Result = TypeVar("Result")


def body_of(event: dict[str, Any]) -> bytes:
    """The CloudEvent as sent and signed: compact JSON, UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def sign(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>`` per key, space separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


# The body is a whole CloudEvent (structured mode): the HTTP binding (3.2.1) names its format
# in Content-Type, which SDKs read to tell the mode. Nothing signed depends on it.
CLOUDEVENTS_JSON = "application/cloudevents+json; charset=utf-8"


def signed_headers(endpoint: Endpoint, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": CLOUDEVENTS_JSON,
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(endpoint.keys, msg_id, timestamp, body),
    }


@dataclass(frozen=True)
class Attempt:
    """What one POST got: ``status`` (None: no answer), an error for anything but 2xx, and
    the receiver's ``Retry-After`` in seconds when it sent one."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        """2xx: the receiver has it."""
        return self.error is None

    @property
    def gone(self) -> bool:
        """410: the receiver wants no more (the spec: disable the endpoint)."""
        return self.status == 410


def post(
    session: requests.Session,
    endpoint: Endpoint,
    msg_id: str,
    event: dict[str, Any],
    timestamp: int,
    read_timeout: float,
) -> Attempt:
    """POST one event to the endpoint, once; never raises for what the receiver does."""
    body = body_of(event)
    watch = _Watch()
    _current.watch = watch  # the connection this request uses tells it (_Connection)
    _deadlines.add(CONNECT_TIMEOUT + read_timeout, watch)
    try:
        response = session.post(
            endpoint.url,
            data=body,
            headers=signed_headers(endpoint, msg_id, timestamp, body),
            timeout=(CONNECT_TIMEOUT, read_timeout),
            allow_redirects=False,
            stream=True,  # the answer's body is not read: only its status counts
        )
    except (requests.RequestException, ValueError) as exc:  # ValueError: a URL urllib3 refuses
        if watch.was_cut or isinstance(exc, requests.Timeout):
            return Attempt(None, f"no answer within {CONNECT_TIMEOUT:g}s / {read_timeout:g}s")
        if isinstance(exc, requests.ConnectionError):
            return Attempt(None, f"connection failed: {_cause(exc)}")
        return Attempt(None, f"{type(exc).__name__}: {_cause(exc)}")
    finally:
        watch.finish()
        _current.watch = None
    if watch.was_cut:  # headers cut short read as complete ones: never a delivery
        response.close()
        return Attempt(None, f"no answer within {CONNECT_TIMEOUT:g}s / {read_timeout:g}s")
    with response:
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(status)
        if 300 <= status < 400:
            return Attempt(status, f"HTTP {status}: a redirect, not followed (fix the URL)")
        reason = str(response.reason or "")[:80]
        return Attempt(status, f"HTTP {status} {reason}".rstrip(), _retry_after(response))


def _cause(exc: BaseException) -> str:
    # The innermost reason ("Connection refused"), not urllib3's wrapping of the whole request.
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return f"{type(exc).__name__}: {exc}"[:300]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    return None  # an HTTP date: our backoff decides


_current = threading.local()  # each sender thread's request under way: its _Watch


class _Watch:
    """One request's connection, shut from the deadline's thread if the answer is late - or,
    if the deadline passed while it was still connecting, as soon as it is connected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: HTTPConnection | None = None
        self._expired = False
        self._finished = False  # the request has its answer or its error: nothing to cut
        self.was_cut = False

    def finish(self) -> None:
        with self._lock:
            self._finished = True

    def using(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self._expired:
                self._shut()

    def cut(self) -> None:
        with self._lock:
            if not self._finished:
                self._expired = True
                self._shut()

    def _shut(self) -> None:
        sock = None if self._connection is None else self._connection.sock
        if sock is not None:
            self.was_cut = True
            # The plain socket's shutdown, also under TLS: the blocked read ends at once.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Deadlines:
    """One thread per process cuts every late request: a heap of deadlines (a request that
    ends first stays in it until its time, then its cut does nothing). Cheaper than a timer
    thread per POST (about 190 µs each to start and stop)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()  # ties never compare two watches
        self.forked()

    def forked(self) -> None:
        """In a forked child: a new lock (the parent's may have been held) and no thread; the
        deadlines copied from the parent belong to requests that are not this process's."""
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._due.clear()

    def add(self, seconds: float, watch: _Watch) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():  # also: a forked child
                self._thread = threading.Thread(
                    target=self._run, name="webhook-deadlines", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                watch = heapq.heappop(self._due)[2]
            watch.cut()  # outside the heap's lock: a cut may take a moment


_deadlines = _Deadlines()
os.register_at_fork(after_in_child=_deadlines.forked)


class _Connection(HTTPConnection):
    """Tells the request's watch which connection it uses: when it is connected (TLS: before
    the request), and when a request starts on it (a connection kept alive)."""

    def connect(self) -> None:
        super().connect()
        self._watched()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watched()
        super().request(*args, **kwargs)

    def _watched(self) -> None:
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.using(self)


class _TLSConnection(_Connection, HTTPSConnection):
    pass  # _Connection's connect and request, around HTTPSConnection's (it connects by TLS)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter whose connections tell the request's watch which one it uses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class Sender:
    """A small pool of threads, each with its own HTTP session (an answer is never read, so
    each POST has a connection of its own), that sends the heads of different tenants at
    once. Use as a context manager: the sessions are closed at its end."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def session(self) -> requests.Session:
        """The calling thread's session (made on first use)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy or .netrc from the environment
            for scheme in ("http://", "https://"):
                session.mount(scheme, _Adapter())
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def submit(self, send: Callable[..., Result], *args: Any) -> Future[Result]:
        """``send(*args)`` on one of the threads."""
        return self._pool.submit(send, *args)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True)
        for session in self._sessions:
            session.close()
