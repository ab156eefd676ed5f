"""The headers every answer of the operator API carries, whatever route made it (errors,
redirects and 404s included): no sniffing, no framing, no caching, no referrer, and a policy
that lets a JSON answer load nothing. Behind TLS (``API_BEHIND_TLS=1``) also HSTS.

A route's own value wins: the console's pages set a CSP of their own (``console/render.py``).
A pure ASGI middleware, so streamed bodies pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Two years, the preload list's minimum; without includeSubDomains: the API's host is not
# necessarily the owner of its parent domain's other names.
HSTS = ("Strict-Transport-Security", "max-age=63072000")


def security_headers(behind_tls: bool) -> dict[str, str]:
    """What every answer carries, HSTS included when the deployment is behind TLS."""
    return {**SECURITY_HEADERS, **dict([HSTS])} if behind_tls else dict(SECURITY_HEADERS)


class SecurityHeaders:
    """ASGI middleware adding ``security_headers(behind_tls)`` to every HTTP answer."""

    def __init__(self, app: ASGIApp, behind_tls: bool = False) -> None:
        self.app = app
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in security_headers(behind_tls).items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in self._headers if item[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's own 500 is sent outside every middleware, without these headers:
            # send it here, with them; the error goes on to be logged (nothing more is sent).
            if not started:
                body = b"Internal Server Error"
                kind = (b"content-type", b"text/plain; charset=utf-8")
                length = (b"content-length", str(len(body)).encode())
                await send_with_headers(
                    {"type": "http.response.start", "status": 500, "headers": [kind, length]}
                )
                await send({"type": "http.response.body", "body": body})
            raise
