"""The operator HTTP routes, as a FastAPI router the platform's UI can mount.

The UI passes its own auth dependency (e.g. its ``require_operator_admin``); the standalone
app in ``api_hooks.app`` passes ``bearer_token_auth(OPERATOR_TOKEN)``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from pydantic import BaseModel

from api_hooks.errors import (
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantBusy,
    TenantExists,
    TenantNotFound,
    UnknownNode,
)
from api_hooks.tenants import (
    CreatedTenant,
    DeletedTenant,
    InfluxDBStatus,
    adopt_database,
    create_tenant,
    delete_tenant,
    request_provisioning,
    tenant_influxdb_status,
    validate_retention_period,
    validate_tenant_id,
    validate_tenant_name,
)

CREATE_FIELDS = ("tenant_id", "name")
OPTIONAL_FIELDS = ("retention_period",)


# Far above any honest body (an id, a name of 200 characters, a retention period), low enough
# that nothing large is ever read into memory.
MAX_BODY_BYTES = 1024 * 1024


async def json_body(request: Request) -> object:
    """The request body as JSON: 413 past MAX_BODY_BYTES, 422 for anything not plain JSON.

    Parsed here, not by a pydantic model, so every malformed body gets a plain message from
    the router itself - also when the UI mounts it in an app without our error handlers
    (FastAPI's default handler fails on bodies such as ``Infinity``).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large()
    if not raw:
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise _unprocessable("body must be JSON nested at most a few levels deep") from None
    except ValueError:
        raise _unprocessable('body must be JSON: {"tenant_id": ..., "name": ...}') from None


async def create_tenant_body(request: Request) -> dict[str, object]:
    """The body of ``POST /operator/tenants``: a JSON object with tenant_id and name, and
    optionally retention_period."""
    data = await json_body(request)
    if data is None:
        raise _unprocessable('body must be JSON: {"tenant_id": ..., "name": ...}')
    if not isinstance(data, dict):
        raise _unprocessable("body must be a JSON object with tenant_id and name")
    missing = [f for f in CREATE_FIELDS if f not in data]
    unknown = sorted(set(data) - set(CREATE_FIELDS) - set(OPTIONAL_FIELDS))
    if missing:
        raise _unprocessable(f"missing field(s): {', '.join(missing)}")
    if unknown:
        raise _unprocessable(f"unknown field(s): {_printable(', '.join(unknown))[:200]}")
    return data


async def adopt_body(request: Request) -> str | None:
    """The optional body of ``POST .../influxdb/adopt``: ``{"node": NAME}`` or nothing."""
    data = await json_body(request)
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"node"}:
        raise _unprocessable('body must be empty or {"node": NAME}')
    node = data.get("node")
    if node is not None and not isinstance(node, str):
        raise _unprocessable("node must be a string")
    return node


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _too_large() -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, detail=f"body must be at most {MAX_BODY_BYTES} bytes"
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=message)


class TenantStats(BaseModel):
    """Body of ``GET /operator/tenants/{tenant_id}/stats``."""

    tenant_id: str
    influxdb: dict[str, Any]


class AdoptAccepted(BaseModel):
    """Body of ``POST /operator/tenants/{tenant_id}/influxdb/adopt``."""

    tenant_id: str
    queued: bool


class RetryAccepted(BaseModel):
    """Body of ``POST /operator/tenants/{tenant_id}/influxdb/retry``."""

    tenant_id: str
    queued: bool


def bearer_token_auth(expected_token: str) -> Callable[[str | None], None]:
    """An auth dependency accepting ``Authorization: Bearer <expected_token>`` only."""
    expected = expected_token.encode()

    def require_operator_token(
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        scheme, _, supplied = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.strip().encode(), expected
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="operator token required: Authorization: Bearer <OPERATOR_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_operator_token


def operator_router(require_operator: Callable[..., Any]) -> APIRouter:
    """The ``/operator`` routes, every one behind ``require_operator``."""
    router = APIRouter(prefix="/operator", dependencies=[Depends(require_operator)])

    @router.post("/tenants", status_code=status.HTTP_201_CREATED)
    def post_tenant(
        body: Annotated[dict[str, object], Depends(create_tenant_body)],
    ) -> CreatedTenant:
        try:
            tenant_id = validate_tenant_id(body["tenant_id"])
            name = validate_tenant_name(body["name"])
            retention = validate_retention_period(body.get("retention_period"))
            return create_tenant(tenant_id, name, retention)
        except (InvalidTenantId, InvalidTenantName, InvalidRetentionPeriod) as exc:
            raise _unprocessable(str(exc)) from exc
        except TenantExists as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc

    @router.get("/tenants/{tenant_id}/stats")
    def get_tenant_stats(tenant_id: str, live: bool = True) -> TenantStats:
        influxdb: InfluxDBStatus = _lookup(tenant_influxdb_status, tenant_id, live)
        return TenantStats(tenant_id=tenant_id, influxdb=dict(influxdb))

    @router.delete("/tenants/{tenant_id}", status_code=status.HTTP_202_ACCEPTED)
    def delete_tenant_route(tenant_id: str) -> DeletedTenant:
        deleted: DeletedTenant = _lookup(delete_tenant, tenant_id)
        return deleted

    @router.post("/tenants/{tenant_id}/influxdb/retry", status_code=status.HTTP_202_ACCEPTED)
    def post_retry(tenant_id: str) -> RetryAccepted:
        queued: bool = _lookup(request_provisioning, tenant_id)
        return RetryAccepted(tenant_id=tenant_id, queued=queued)

    @router.post("/tenants/{tenant_id}/influxdb/adopt", status_code=status.HTTP_202_ACCEPTED)
    def post_adopt(
        tenant_id: str, node: Annotated[str | None, Depends(adopt_body)]
    ) -> AdoptAccepted:
        try:
            queued: bool = _lookup(adopt_database, tenant_id, node)
        except UnknownNode as exc:
            raise _unprocessable(str(exc)) from exc
        except TenantBusy as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        return AdoptAccepted(tenant_id=tenant_id, queued=queued)

    return router


def _lookup(function: Callable[..., Any], tenant_id: str, *args: Any) -> Any:
    try:
        validate_tenant_id(tenant_id)
        return function(tenant_id, *args)
    except InvalidTenantId as exc:
        # A malformed id cannot name a tenant: answer as for any unknown tenant, with the rule.
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such tenant: {exc}") from exc
    except TenantNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
