"""Request bodies of the operator API, parsed by hand.

Parsed here, not by FastAPI from a pydantic model, so every malformed body gets a plain message
from the router itself - also when the UI mounts it in an app without our error handlers
(FastAPI's default handler fails on bodies such as ``Infinity``) - and a body is never read
past MAX_BODY_BYTES. The models in ``api_hooks.schemas`` describe these bodies in the OpenAPI
document and name the fields accepted here.
"""

from __future__ import annotations

import json

from fastapi import Request

from api_hooks.http_errors import not_json, too_large, unprocessable
from api_hooks.schemas import AdoptRequest, CreateTenantRequest

CREATE_FIELDS = tuple(n for n, f in CreateTenantRequest.model_fields.items() if f.is_required())
OPTIONAL_FIELDS = tuple(n for n in CreateTenantRequest.model_fields if n not in CREATE_FIELDS)
ADOPT_FIELDS = frozenset(AdoptRequest.model_fields)

# Far above any honest body (an id, a name of 200 characters, a retention period), low enough
# that nothing large is ever read into memory.
MAX_BODY_BYTES = 1024 * 1024


async def json_body(request: Request) -> object:
    """The request body as JSON: 413 past MAX_BODY_BYTES, 415 for a body not sent as
    ``application/json``, 422 for anything not plain JSON.

    Why by hand and not by a pydantic model: see the module's docstring. Why the media type:
    a page on another site can post a form or ``text/plain`` with its visitor's cookies and no
    preflight, but not ``application/json`` - so where the UI mounts these routes behind its
    cookie session, a cross-site post is refused here, whatever its body says.
    """
    refuse_forms(request)  # before reading: a body refused for its type is never read
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large(MAX_BODY_BYTES)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise too_large(MAX_BODY_BYTES)
    if not raw:
        return None
    if not _is_json(request):  # a body with no Content-Type
        raise not_json()
    try:
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise unprocessable("body must be JSON nested at most a few levels deep") from None
    except _DuplicateKey as exc:
        raise unprocessable(f"body names {_printable(str(exc))[:80]!r} twice") from None
    except ValueError:
        raise unprocessable('body must be JSON: {"tenant_id": ..., "name": ...}') from None


def refuse_forms(request: Request) -> None:
    """415 for a request that names a ``Content-Type`` other than ``application/json`` (an
    empty form still names one): the dependency of a route that takes no body."""
    if "content-type" in request.headers and not _is_json(request):
        raise not_json()


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0]
    return media_type.strip().lower() == "application/json"


async def create_tenant_body(request: Request) -> dict[str, object]:
    """The body of ``POST /operator/tenants``: a JSON object with tenant_id and name, and
    optionally retention_period (see CreateTenantRequest)."""
    data = await json_body(request)
    if data is None:
        raise unprocessable('body must be JSON: {"tenant_id": ..., "name": ...}')
    if not isinstance(data, dict):
        raise unprocessable("body must be a JSON object with tenant_id and name")
    missing = [f for f in CREATE_FIELDS if f not in data]
    unknown = sorted(set(data) - set(CREATE_FIELDS) - set(OPTIONAL_FIELDS))
    if missing:
        raise unprocessable(f"missing field(s): {', '.join(missing)}")
    if unknown:
        raise unprocessable(f"unknown field(s): {_printable(', '.join(unknown))[:200]}")
    return data


async def adopt_body(request: Request) -> str | None:
    """The optional body of ``POST .../influxdb/adopt``: ``{"node": NAME}`` or nothing."""
    data = await json_body(request)
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - ADOPT_FIELDS:
        raise unprocessable('body must be empty or {"node": NAME}')
    node = data.get("node")
    if node is not None and not isinstance(node, str):
        raise unprocessable("node must be a string")
    return node


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # A key named twice is refused: a proxy or log that reads the first would disagree with
    # a parser that keeps the last, as json.loads does.
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found
