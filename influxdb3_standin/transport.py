"""HTTP plumbing: the listening socket, keep-alive connections, bodies in and answers out.

Knows bytes and sockets, not the API: each request is handed, body read, to an application
callable whose :class:`Reply` says to answer, to drop the request unanswered, or to reset the
connection. Open connections are tracked so that an outage or ``stop()`` can cut them.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from influxdb3_standin.messages import MAX_REQUEST_BYTES, Reply, Request, Response

logger = logging.getLogger(__name__)

# Bodies beyond this are not even drained: answer 413 and drop the connection.
_MAX_DRAIN_BYTES = 4 * MAX_REQUEST_BYTES
# An idle keep-alive connection is closed after this long.
_IDLE_CONNECTION_SECONDS = 60.0


Application = Callable[[Request], Reply]


class Listener:
    """A listening server in a daemon thread, and the client connections it has open.

    ``changed`` is the stand-in's condition: its lock guards the connection set, and it is
    notified when a connection closes so that ``stop()`` can wait for handlers to finish.
    """

    def __init__(
        self,
        changed: threading.Condition,
        app: Application,
        poll_interval: float = 0.05,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._changed = changed
        self._poll_interval = poll_interval
        self.app = app
        self.clock = clock  # the server's own: every answer's Date (default: the host's)
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.connections_accepted = 0

    def bind(self, host: str, port: int) -> int:
        """Listen and serve; returns the port (the one picked, for port 0)."""
        server = _Server((host, port), self)
        port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name=f"influxdb3-standin:{port}",
            daemon=True,
        )
        thread.start()
        self._server = server
        self._serve_thread = thread
        return port

    def unbind(self) -> None:
        """Stop listening and cut every open connection."""
        server, thread = self._server, self._serve_thread
        self._server = None
        self._serve_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            # shutdown() (unlike close()) wakes a handler blocked reading the next request.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def wait_closed(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until no connection is open."""
        with self._changed:
            self._changed.wait_for(lambda: not self._connections, timeout)

    def track(self, connection: socket.socket) -> None:
        with self._changed:
            self._connections.add(connection)
            self.connections_accepted += 1

    def untrack(self, connection: socket.socket) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()


def _first_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, value)
    return values


class _ClientGone(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # listen again on the same port after an outage

    def __init__(self, address: tuple[str, int], listener: Listener) -> None:
        self.listener = listener
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.listener.track(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.listener.untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length
    server_version = "influxdb3-standin"
    timeout = _IDLE_CONNECTION_SECONDS

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        clock = cast(_Server, self.server).listener.clock
        if timestamp is None and clock is not None:
            return email.utils.format_datetime(clock().astimezone(UTC), usegmt=True)
        return super().date_time_string(timestamp)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus the client's
        # delayed ACK adds ~40 ms to every answer on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is logged by _handle, without headers

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        started = time.monotonic()
        app = cast(_Server, self.server).listener.app
        split = urllib.parse.urlsplit(self.path)
        outcome = "?"
        try:
            body, too_large = self._read_body()
            request = Request(
                method=self.command,
                path=split.path,
                query=split.query,
                params=_first_values(split.query),
                headers={name.lower(): value for name, value in self.headers.items()},
                authorization=self.headers.get("Authorization"),
                body=body,
                too_large=too_large,
            )
            reply = app(request)
            if reply.reset:
                outcome = "connection reset"
                self._reset_connection()
                return
            if reply.response is None:
                outcome = "dropped unanswered"
                self.close_connection = True
                return
            self._send(reply.response, reply.trickle)
            outcome = str(reply.response.status)
            if reply.after is not None:
                reply.after()
        except _ClientGone:
            outcome = "client went away"
            self.close_connection = True
        except OSError as exc:
            outcome = f"connection error: {exc.__class__.__name__}"
            self.close_connection = True
        finally:
            logger.info(
                "%s %s -> %s (%.1f ms)",
                self.command,
                split.path,
                outcome,
                (time.monotonic() - started) * 1000,
            )

    def _read_body(self) -> tuple[bytes, bool]:
        """The request body (b"" if over the limit) and whether it was over the limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", False
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self.close_connection = True
            raise _ClientGone() from None
        if length > MAX_REQUEST_BYTES:
            if length > _MAX_DRAIN_BYTES:
                self.close_connection = True
            else:
                self._drain(length)
            return b"", True
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ClientGone()
        return body, False

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                raise _ClientGone()
            remaining -= len(chunk)

    def _read_chunked_body(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise _ClientGone()
            try:
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _ClientGone() from None
            if chunk_size == 0:
                break
            if size + chunk_size > MAX_REQUEST_BYTES:
                self._drain(chunk_size)
            else:
                chunk = self.rfile.read(chunk_size)
                if len(chunk) < chunk_size:
                    raise _ClientGone()
                parts.append(chunk)
            size += chunk_size
            self.rfile.readline(1024)  # CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        if size > MAX_REQUEST_BYTES:
            return b"", True
        return b"".join(parts), False

    def _send(self, response: Response, trickle: float = 0.0) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        if response.status != 204:  # RFC 9110: no Content-Length on 204
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if response.body and trickle > 0:
            self.wfile.flush()
            for index in range(len(response.body)):
                time.sleep(trickle)
                self.wfile.write(response.body[index : index + 1])
                self.wfile.flush()
        elif response.body:
            self.wfile.write(response.body)
        self.wfile.flush()

    def _reset_connection(self) -> None:
        """Abort the TCP connection: with SO_LINGER 0, close() sends RST instead of FIN."""
        self.close_connection = True
        connection = self.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # socket.close() would wait for rfile/wfile to be closed too; close the descriptor now.
        os.close(connection.detach())
