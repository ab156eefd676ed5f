"""The operator HTTP routes, as a FastAPI router the platform's UI can mount.

The UI passes its own auth dependency (e.g. its ``require_operator_admin``); the standalone
app in ``api_hooks.app`` passes ``bearer_token_auth(OPERATOR_TOKEN)``. Every 4xx answer is
``{"detail": "<message>"}`` (``ErrorBody``), FastAPI's validation errors included: the routes
are ``PlainErrorRoute``s, so this holds in the UI's app too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from anyio import to_thread
from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse, StreamingResponse

from api_hooks.actors import OPERATOR_TOKEN_ACTOR, actor_from, identified
from api_hooks.auth import bearer_auth, refuse_cross_site_changes
from api_hooks.bodies import (
    MAX_BODY_BYTES,
    adopt_body,
    create_tenant_body,
    json_body,
    refuse_forms,
)
from api_hooks.errors import (
    InvalidCursor,
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantBusy,
    TenantExists,
    TenantNotFound,
    UnknownNode,
)
from api_hooks.events import EventsPage, TenantEventsPage, tenant_events
from api_hooks.http_errors import PlainErrorRoute, error_responses, unprocessable
from api_hooks.schemas import (
    TENANT_ID_RULE,
    AdoptAccepted,
    AdoptRequest,
    CreateTenantRequest,
    RetryAccepted,
    TenantStats,
    documented_body,
)
from api_hooks.shapes import CreatedTenant, DeletedTenant, TenantStatsBody
from api_hooks.status import tenant_stats
from api_hooks.stream import (
    TooManyStreams,
    check_limit,
    event_stream,
    events_page,
    reserve,
    selection,
)
from api_hooks.tenants import (
    adopt_database,
    create_tenant,
    delete_tenant,
    request_provisioning,
    validate_retention_period,
    validate_tenant_id,
    validate_tenant_name,
)
from api_hooks.throttle import THROTTLED
from worker.event_reads import DEFAULT_LIMIT, MAX_LIMIT
from worker.events import Route

# Besides the router: names importable from here before the bodies got their own module.
__all__ = [
    "MAX_BODY_BYTES",
    "AdoptAccepted",
    "RetryAccepted",
    "TenantStats",
    "adopt_body",
    "bearer_token_auth",
    "create_tenant_body",
    "json_body",
    "operator_router",
]

TenantId = Annotated[
    str,
    Path(description=f"{TENANT_ID_RULE}. A malformed id answers 404, as an unknown one does"),
]

NOT_FOUND = "No tenant has this id (a malformed id names none; the message gives the rule)"
TOO_LARGE = f"The body is over {MAX_BODY_BYTES} bytes"
NOT_JSON = "A body sent as anything but `Content-Type: application/json`"


def bearer_token_auth(expected_token: str) -> Callable[..., str | None]:
    """An auth dependency accepting ``Authorization: Bearer <expected_token>`` only (the
    operator token); a client that keeps failing is throttled (429). Its holder acts as
    ``operator-token`` in the event log."""
    return bearer_auth(
        expected_token, "OPERATOR_TOKEN", "OperatorToken", identity=OPERATOR_TOKEN_ACTOR
    )


def operator_router(require_operator: Callable[..., Any]) -> APIRouter:
    """The ``/operator`` routes, every one behind ``require_operator``. What it returns is the
    operator's identity: the actions are recorded in the event log with it as their actor
    (``api_hooks.actors.actor_of``)."""
    router = APIRouter(
        prefix="/operator",
        tags=["operator"],
        dependencies=[Depends(identified(require_operator)), Depends(refuse_cross_site_changes)],
        route_class=PlainErrorRoute,
        responses=error_responses(
            {
                401: "Operator credentials missing or wrong",
                403: "A change asked from another origin's page (`Sec-Fetch-Site`, `Origin`)",
                429: THROTTLED,
                422: "A parameter is not valid (the message names it)",
            }
        ),
    )

    @router.post(
        "/tenants",
        status_code=status.HTTP_201_CREATED,
        summary="Create a tenant",
        response_description="Stored as pending; its provisioning is queued",
        responses=error_responses(
            {
                409: "A tenant with this id exists (the detail says when it is being deleted)",
                413: TOO_LARGE,
                415: NOT_JSON,
                422: "The body is not valid: not JSON, nested too deep, a field missing or "
                "unknown, or an id, name or retention period breaking its rule (the message "
                "names it)",
            }
        ),
        openapi_extra=documented_body(CreateTenantRequest, required=True),
    )
    def post_tenant(
        request: Request,
        body: Annotated[dict[str, object], Depends(create_tenant_body)],
    ) -> CreatedTenant:
        """Store the tenant as `pending` and queue its provisioning; never waits for InfluxDB.

        `influxdb.queued` is false when the broker did not take the message: the tenant is
        created all the same and the reconciler queues it later.
        """
        try:
            tenant_id = validate_tenant_id(body["tenant_id"])
            name = validate_tenant_name(body["name"])
            retention = validate_retention_period(body.get("retention_period"))
            return create_tenant(
                tenant_id, name, retention, actor=actor_from(request), route=Route.HTTP
            )
        except (InvalidTenantId, InvalidTenantName, InvalidRetentionPeriod) as exc:
            raise unprocessable(str(exc)) from exc
        except TenantExists as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc

    @router.get(
        "/tenants/{tenant_id}/stats",
        summary="Read a tenant's provisioning state",
        responses=error_responses({404: NOT_FOUND}),
    )
    def get_tenant_stats(
        tenant_id: TenantId,
        live: Annotated[
            bool,
            Query(
                description="Also ask InfluxDB now (bounded by LIVE_CHECK_TIMEOUT; a slow or "
                "failing server shows in `influxdb.live.error`). false: Postgres only"
            ),
        ] = True,
    ) -> TenantStats:
        """The state from Postgres and, with `live`, whether the database exists and how many
        telemetry rows it holds. A database that is not the tenant's is never counted."""
        stats: TenantStatsBody = _lookup(tenant_stats, tenant_id, live)
        return TenantStats(**stats)

    @router.delete(
        "/tenants/{tenant_id}",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Delete a tenant and its database",
        response_description="Being deleted; the deletion is queued",
        responses=error_responses({404: NOT_FOUND}),
    )
    def delete_tenant_route(request: Request, tenant_id: TenantId) -> DeletedTenant:
        """Move the tenant to `deprovisioning` at once; a task soft-deletes its database, then
        removes the tenant. Deleting a tenant already being deleted queues the work again."""
        deleted: DeletedTenant = _lookup(delete_tenant, tenant_id, **_who(request))
        return deleted

    @router.post(
        "/tenants/{tenant_id}/influxdb/retry",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Run a tenant's provisioning now",
        response_description="Queued",
        responses=error_responses({404: NOT_FOUND, 415: NOT_JSON}),
        dependencies=[Depends(refuse_forms)],
    )
    def post_retry(request: Request, tenant_id: TenantId) -> RetryAccepted:
        """A failed tenant goes back to `pending` with a fresh attempt budget; a scheduled retry
        runs now instead (never a second chain); a tenant being deleted has its deletion run
        now; a provisioned one is verified again."""
        queued: bool = _lookup(request_provisioning, tenant_id, **_who(request))
        return RetryAccepted(tenant_id=tenant_id, queued=queued)

    @router.post(
        "/tenants/{tenant_id}/influxdb/adopt",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Adopt the existing database of the tenant's name",
        response_description="Queued",
        responses=error_responses(
            {
                404: NOT_FOUND,
                409: "The tenant is provisioned (unless its server left the nodes file and "
                "`node` names another), being provisioned or being deleted",
                413: TOO_LARGE,
                415: NOT_JSON,
                422: "The body is not valid, or the node is not in the pool (or none was given "
                "for a tenant without a server)",
            }
        ),
        openapi_extra=documented_body(AdoptRequest, required=False),
    )
    def post_adopt(
        request: Request, tenant_id: TenantId, node: Annotated[str | None, Depends(adopt_body)]
    ) -> AdoptAccepted:
        """For a tenant stopped as `name_taken`, once an operator has checked that the data
        there is this tenant's: the database is declared its own and provisioning runs. Also
        moves a provisioned tenant off a server that left the nodes file, to its database
        copied to `node`."""
        try:
            queued: bool = _lookup(adopt_database, tenant_id, node, **_who(request))
        except UnknownNode as exc:
            raise unprocessable(str(exc)) from exc
        except TenantBusy as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        return AdoptAccepted(tenant_id=tenant_id, queued=queued)

    @router.get(
        "/tenants/{tenant_id}/events",
        summary="Read a tenant's events",
        response_description="The tenant's events after `after`, oldest first, as CloudEvents",
        response_model_exclude_none=True,
        responses=error_responses(
            {
                400: "`after` or `limit` is not valid (the message says which)",
                404: "No tenant has this id, and none ever had (a deleted tenant's events "
                "stay readable)",
            }
        ),
    )
    def get_tenant_events(
        tenant_id: TenantId,
        after: Annotated[
            str | None,
            Query(
                description="The `tenantseq` of the last event read (the page's `next`); "
                "absent: from the first event kept",
                examples=["12"],
            ),
        ] = None,
        limit: Annotated[
            str | None,
            Query(
                description=f"Events per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
                examples=["100"],
            ),
        ] = None,
    ) -> TenantEventsPage:
        """Every transition of the tenant and every operator action on it, in its own
        sequence (`tenantseq`: 1, 2, 3, ..., without gaps; events older than the retention
        are pruned, the last one kept). Poll with `after` set to the page's `next`."""
        try:
            page = _lookup(tenant_events, tenant_id, after, limit)
        except InvalidCursor as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
        return TenantEventsPage.model_validate(page)

    _events_route(router)
    return router


STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _events_route(router: APIRouter) -> None:
    @router.get(
        "/events",
        summary="Follow every tenant's events: pages of JSON, or a Server-Sent Events stream",
        response_model=None,
        responses={
            200: {
                "description": "`Accept: text/event-stream`: a stream that stays open, one "
                "message per event (`id:` the event's id, `event:` its type, `data:` the "
                "CloudEvent), resumed from `Last-Event-ID`. Otherwise: a page of JSON",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/EventsPage"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
                "model": EventsPage,
            },
            **error_responses(
                {
                    400: "`after`, `Last-Event-ID`, `limit`, `tenant` or `type` is not valid "
                    "(the message says which)",
                    503: "This process serves as many streams as it may; try again later",
                }
            ),
        },
    )
    async def get_events(
        request: Request,
        after: Annotated[
            str | None,
            Query(
                description='Read after this event id (`"<xid>-<id>"`, a page\'s `next`); '
                "`0-0`: from the first event kept; absent: from now on",
                examples=["7342-120"],
            ),
        ] = None,
        tenant: Annotated[str | None, Query(description="Only this tenant's events")] = None,
        event_type: Annotated[
            list[str],
            Query(
                alias="type",
                description="Only events of these types (repeat the parameter), e.g. "
                "`tenant.provisioned`",
            ),
        ] = [],  # noqa: B006 - FastAPI copies the default per request
        limit: Annotated[
            str | None,
            Query(description=f"JSON pages: events per page, 1 to {MAX_LIMIT}"),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="Sent by a reconnecting EventSource: wins over `after`",
            ),
        ] = None,
    ) -> Response:
        """Every tenant's events in one order that never changes (an event is listed once it
        and every older transaction have committed), so that a reader resuming after the
        last id it saw misses none and sees none twice."""
        try:
            chosen = await to_thread.run_sync(selection, after, last_event_id, tenant, event_type)
            if "text/event-stream" not in request.headers.get("accept", ""):
                page = await to_thread.run_sync(events_page, chosen, limit)
                body = EventsPage.model_validate(page).model_dump(mode="json", exclude_none=True)
                return JSONResponse(body)
            check_limit(limit)
        except (InvalidCursor, InvalidTenantId) as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
        try:
            stream = reserve(lambda slot: event_stream(chosen, slot))
        except TooManyStreams as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="too many event streams on this process; try again later",
                headers={"Retry-After": "5"},
            ) from exc
        return StreamingResponse(stream, media_type="text/event-stream", headers=STREAM_HEADERS)


def _who(request: Request) -> dict[str, str]:
    """The actor and route of an HTTP action, for the hook's keyword arguments."""
    return {"actor": actor_from(request), "route": Route.HTTP}


def _lookup(function: Callable[..., Any], tenant_id: str, *args: Any, **kwargs: Any) -> Any:
    try:  # each hook checks the id (stats: an older row's outside the rule is shown too)
        return function(tenant_id, *args, **kwargs)
    except InvalidTenantId as exc:
        # A malformed id cannot name a tenant: answer as for any unknown tenant, with the rule.
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such tenant: {exc}") from exc
    except TenantNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
