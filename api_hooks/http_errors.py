"""The one shape of every 4xx answer of the operator API: ``{"detail": "<message>"}``, and of
its 503 when Postgres cannot be reached (with ``Retry-After``), not a bare 500.

FastAPI answers its own request validation errors with a list of error objects; the routes of
``operator_router`` use ``PlainErrorRoute`` instead, which turns them into one plain message.
It lives in the router, not in an exception handler, so the shape holds when the UI mounts the
router in an app of its own; ``create_app`` adds ``plain_validation_error`` as a handler too,
for anything outside the router.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

logger = logging.getLogger(__name__)
# The connection, not the statement; or a wait past its bound (a lock: lock_timeout is an
# OperationalError; a pooled connection: PoolTimeout)
UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)

# Where FastAPI found the bad value ("loc"[0]) in the words an operator knows.
_SOURCES = {
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "cookie": "cookie",
    "body": "body",
}


class ErrorBody(BaseModel):
    """The body of every 4xx answer."""

    detail: str = Field(
        description="What was wrong, in plain words: names the broken rule, the parameter or "
        "the tenant.",
        examples=["tenant 'acme' does not exist"],
    )


def error_responses(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting each status code of ``described`` as an ErrorBody."""
    return {code: {"model": ErrorBody, "description": text} for code, text in described.items()}


def unprocessable(message: str) -> HTTPException:
    """A 422 with ``message`` as its detail."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=message)


def too_large(limit: int) -> HTTPException:
    """A 413 for a body over ``limit`` bytes."""
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, detail=f"body must be at most {limit} bytes"
    )


def not_json() -> HTTPException:
    """A 415 for a body sent as anything but JSON."""
    return HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail="body must be sent as Content-Type: application/json",
    )


def validation_detail(exc: RequestValidationError) -> str:
    """One plain message naming each parameter FastAPI refused, e.g. ``query parameter live:
    Input should be a valid boolean, unable to interpret input``.

    The input itself is left out: it may be long, and it is what the client sent anyway.
    """
    messages: list[str] = []
    for error in exc.errors():
        source, *path = [str(part) for part in error.get("loc", ())] or ["request"]
        where = " ".join(filter(None, [_SOURCES.get(source, source), ".".join(path)]))
        message = f"{where}: {error.get('msg', 'not valid')}"
        if message not in messages:
            messages.append(message)
    return "; ".join(messages) or "request not valid"


def registry_unavailable(exc: Exception) -> HTTPException:
    """A 503 for a request Postgres could not serve (down, unreachable, restarting): the client
    tries again; nothing was changed (a change commits or is rolled back as a whole)."""
    logger.warning("Postgres cannot be reached: %s", getattr(exc, "orig", None) or exc)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=(
            "the tenant registry (Postgres) cannot be reached or is busy; nothing was changed, "
            "try again"
        ),
        headers={"Retry-After": "5"},
    )


async def registry_unavailable_error(request: Request, exc: Exception) -> Response:
    """Exception handler: Postgres unreachable, as 503 ``{"detail"}`` with ``Retry-After``
    (for routes outside ``PlainErrorRoute``: the console, /metrics)."""
    answer = registry_unavailable(exc)
    return JSONResponse(
        {"detail": answer.detail}, status_code=answer.status_code, headers=answer.headers
    )


async def plain_validation_error(request: Request, exc: Exception) -> Response:
    """Exception handler: a RequestValidationError as 422 ``{"detail": "<message>"}``."""
    if not isinstance(exc, RequestValidationError):  # registered for that class only
        raise exc
    return JSONResponse(
        {"detail": validation_detail(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


class PlainErrorRoute(APIRoute):
    """An APIRoute that answers request validation errors as 422 ``{"detail": "<message>"}``,
    and Postgres unreachable as 503.

    Raised as an HTTPException, which any FastAPI app (the UI's too) renders as ErrorBody.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with its RequestValidationError made a plain 422."""
        handler = super().get_route_handler()

        async def plain_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise unprocessable(validation_detail(exc)) from exc
            except UNREACHABLE as exc:
                raise registry_unavailable(exc) from exc

        return plain_errors
