"""Requests and answers as the API sees them, and the contract's exact wording.

The transport turns HTTP into a :class:`Request` and acts on the :class:`Reply` it gets back;
everything in between deals only in these types. Core's error bodies are a mix of plain text and
JSON, all without a ``Content-Type`` (``../shared/influxdb3-api.md``): the helpers here are the
one place that mix is reproduced, so every module answers byte for byte alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""Core's default ``--max-http-request-size`` (10 MiB)."""

MAX_DATABASE_NAME_BYTES = 511

MSG_UNAUTHENTICATED = "the request was not authenticated"
MSG_MALFORMED_AUTH = (
    "Authorization header was malformed, the request was not in the form of "
    "'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and Basic"
)
MSG_NAME_INVALID_CHAR = (
    "invalid character in database or rp name: must be ASCII, "
    "containing only letters, numbers, underscores, or hyphens"
)
MSG_NAME_START = "db name did not start with a number or letter"
MSG_NAME_EMPTY = "db name cannot be empty"
MSG_NAME_TOO_LONG = f"db name too long: max {MAX_DATABASE_NAME_BYTES}"
MSG_EXISTS = "attempted to create a resource that already exists"
MSG_CONTENT_TYPE = "unacceptable content-type, expected: application/json"
MSG_EMPTY_WRITE = "incoming write was empty"
MSG_TOO_LARGE = f"max request size ({MAX_REQUEST_BYTES} bytes) exceeded"
MSG_PARTIAL_WRITE = "partial write of line protocol occurred"


@dataclass
class Request:
    method: str
    path: str
    query: str
    params: dict[str, str]  # the first value of each query parameter
    headers: dict[str, str]  # lower-cased names
    authorization: str | None  # the first Authorization header, as the auth check reads it
    body: bytes
    too_large: bool

    def json_content_type(self) -> bool:
        value = self.headers.get("content-type", "")
        mime = value.split(";", 1)[0].strip().lower()
        kind, _, subtype = mime.partition("/")
        return kind == "application" and (subtype == "json" or subtype.endswith("+json"))

    def accept_format(self) -> str:
        accept = self.headers.get("accept", "")
        if "application/jsonl" in accept:
            return "jsonl"
        if "text/csv" in accept:
            return "csv"
        return "json"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Reply:
    response: Response | None  # None: the request is dropped unanswered
    reset: bool = False  # abort the connection (RST) instead of answering
    after: Callable[[], None] | None = None  # run once the response is on the wire
    trickle: float = 0.0  # seconds between the body's bytes (a server dripping its answer)


class ApiError(Exception):
    """An error answer; raised anywhere below a route and turned into a response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def text_error(status: int, message: str) -> Response:
    # Core sends its plain-text error bodies without a Content-Type.
    return Response(status, message.encode())


def json_error(status: int, message: str, data: object = None, *, compact: bool = True) -> Response:
    # Most JSON errors are serialised by serde (compact); the auth errors are hand-formatted
    # `{"error": "..."}` strings in Core. Either way, no Content-Type.
    payload: dict[str, object] = {"error": message}
    if data is not None:
        payload["data"] = data
    separators = (",", ":") if compact else (", ", ": ")
    return Response(status, json.dumps(payload, separators=separators).encode())


def json_ok(payload: object) -> Response:
    return Response(200, json.dumps(payload, separators=(",", ":")).encode(), "application/json")


def limit_error(limit: int) -> ApiError:
    return ApiError(
        json_error(422, f"Adding a new database would exceed limit of {limit} databases")
    )


def load_json_object(body: bytes) -> dict[str, Any]:
    """A JSON request body that must be an object; a serde-worded 400 otherwise."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        detail = (
            f"{message} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else message
        )
        raise ApiError(text_error(400, f"serde json error: {detail}")) from None
    if not isinstance(payload, dict):
        raise ApiError(
            text_error(
                400, f"serde json error: invalid type: {type(payload).__name__}, expected a map"
            )
        )
    return payload
