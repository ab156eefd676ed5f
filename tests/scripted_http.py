"""A tiny HTTP server that answers whatever status and body a test scripts.

It stands for an InfluxDB (or a proxy in front of one) that answers garbage, which the
stand-in, following the contract, never does.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    """Answers every request with ``status`` and ``body`` (settable between requests)."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.headers: dict[str, str] = {}  # sent with every answer
        self.routes: dict[tuple[str, str], tuple[int, bytes]] = {}  # (method, path) -> answer
        self.next_answers: list[tuple[int, bytes]] = []  # answered first, one per request
        self.next_delays: list[float] = []  # seconds before each next answer, one per request
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                scripted.requests.append((self.command, self.path, dict(self.headers)))
                route = (self.command, self.path.split("?", 1)[0])
                status, body = scripted.routes.get(route, (scripted.status, scripted.body))
                if scripted.next_answers:
                    status, body = scripted.next_answers.pop(0)
                if scripted.next_delays:
                    time.sleep(scripted.next_delays.pop(0))
                self.send_response(status)
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up (timeout) is part of the script

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def answer(self, status: int, body: bytes | str) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body

    def answer_route(self, method: str, path: str, status: int, body: bytes | str) -> None:
        """Answer ``method path`` (query ignored) with this, whatever the default says."""
        self.routes[(method, path)] = (status, body.encode() if isinstance(body, str) else body)

    def answer_next(self, *answers: tuple[int, bytes | str]) -> None:
        """Answer the next requests with these, in order, before anything else."""
        for status, body in answers:
            self.next_answers.append((status, body.encode() if isinstance(body, str) else body))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
