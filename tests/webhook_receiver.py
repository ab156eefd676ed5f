"""A webhook receiver for the tests: a real threaded HTTP server on loopback that verifies every
request's signature with the Standard Webhooks library (``standardwebhooks``, the spec's own),
records what it got, and answers what the test tells it - 2xx, an error, a redirect, slowly,
a byte at a time for ever, or not at all (down: connections refused)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

DRIP_FOR = 60.0  # s: how long a dripping answer goes on, at most (then the thread ends)


@dataclass(frozen=True)
class Answer:
    """What the receiver answers: a status, after ``delay`` seconds, with ``headers``."""

    status: int = 204
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None  # the status line's reason phrase
    drip: float = 0.0  # seconds between bytes of the answer (a slowloris), up to DRIP_FOR


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool  # the signature checks out with the spec's library
    at: float  # time.time() when it arrived
    answered: int  # the status it was answered with (0: none, it was too slow for the sender)
    why: str = ""  # why it did not verify: "short body" (the sender died sending), "path", or
    # the library's reason ("No matching signature found", "Message timestamp too old", ...)
    content_type: str = ""

    @property
    def event(self) -> dict[str, Any]:
        """The CloudEvent in the body."""
        return json.loads(self.body)


class Receiver:
    """Start with :meth:`start`; ``url`` is where it listens. ``check_time``: verify the
    timestamp too (the library's 5-minute tolerance), which a test on an injected clock
    cannot."""

    def __init__(self, secret: str, *, check_time: bool = True, path: str = "/hooks") -> None:
        self.webhook = Webhook(secret)
        self.check_time = check_time
        self.path = path
        self.received: list[Received] = []
        self.cut = 0  # dripping answers the sender shut before they ended
        self.answer: Callable[[Received], Answer] = lambda _: Answer()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}"

    def start(self) -> Receiver:
        """Listen (again, on the same port after :meth:`down`)."""
        server = _Server(("127.0.0.1", self._port), self._handler())
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer_with(self, answer: Answer | Callable[[Received], Answer]) -> None:
        """Answer every request so (or as the function decides, per request)."""
        self.answer = answer if callable(answer) else (lambda _: answer)

    def verify(self, body: bytes, headers: dict[str, str]) -> str:
        """Why the request does not verify, or "" when it does."""
        if self.check_time:
            try:
                self.webhook.verify(body, headers)
            except WebhookVerificationError as exc:
                return str(exc) or type(exc).__name__
            return ""
        # The library's signing (the spec's algorithm) at the request's own timestamp.
        stamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
        expected = self.webhook.sign(headers["webhook-id"], stamp, body.decode())
        return "" if expected in headers["webhook-signature"].split(" ") else "signature"

    def first_arrivals(self) -> list[Received]:
        """Verified requests, duplicates (a ``webhook-id`` seen before) dropped."""
        seen: set[str] = set()
        firsts = []
        for request in self.snapshot():
            if request.verified and request.webhook_id not in seen:
                seen.add(request.webhook_id)
                firsts.append(request)
        return firsts

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if len(body) < length:
                    why = "short body"  # the connection closed mid-body: the sender died
                elif self.path != receiver.path:
                    why = "path"
                else:
                    why = receiver.verify(body, headers)
                arrived = Received(
                    headers.get("webhook-id", ""),
                    headers.get("webhook-timestamp", ""),
                    headers.get("webhook-signature", ""),
                    body,
                    not why,
                    time.time(),
                    0,
                    why,
                    headers.get("content-type", ""),
                )
                answer = receiver.answer(arrived)
                if answer.delay:
                    time.sleep(answer.delay)
                with receiver._lock:
                    receiver.received.append(_answered(arrived, answer.status))
                if answer.drip:
                    self._drip(answer)
                    return
                try:
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def _drip(self, answer: Answer) -> None:
                # Never more than one read timeout between bytes, and never done.
                line = f"HTTP/1.1 {answer.status} OK\r\nx-drip: ".encode()
                until, sent = time.monotonic() + DRIP_FOR, 0
                try:
                    while time.monotonic() < until:
                        self.wfile.write(line[sent : sent + 1] or b"x")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(answer.drip)
                except OSError:
                    with receiver._lock:
                        receiver.cut += 1  # the sender shut the connection

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a sender's 8 connections at once would see SYNs
    # dropped and retried a second later, as no real receiver does.
    request_queue_size = 128


def _answered(request: Received, status: int) -> Received:
    return Received(
        request.webhook_id,
        request.timestamp,
        request.signature,
        request.body,
        request.verified,
        request.at,
        status,
        request.why,
        request.content_type,
    )
