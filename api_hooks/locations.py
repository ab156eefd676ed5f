"""``/locations``: where each tenant's database is, for the services that write and read
telemetry (not for operators). Read-only, behind a credential of its own (LOCATIONS_TOKEN).

Clients keep the whole map and ask for the changes since their version (``locations_client``
does this); ``worker.locations`` says how versions are kept. Every 4xx answer is
``{"detail": "<message>"}``. The UI can mount the router in its own app, like the operator's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from api_hooks.auth import bearer_auth
from api_hooks.errors import InvalidTenantId
from api_hooks.http_errors import PlainErrorRoute, error_responses
from api_hooks.tenants import validate_tenant_id
from api_hooks.throttle import THROTTLED
from locations_client.map import NEXT_SINCE_HEADER
from worker import locations
from worker.db import get_engine
from worker.nodes import shared_pool
from worker.settings import get_settings

MAX_PAGE = 10_000
DEFAULT_PAGE = 5_000


class LocationBody(BaseModel):
    """One tenant's location. A server (``node``, ``url``) only when ``ready``: never a guess."""

    tenant_id: str
    database: str = Field(description="Its InfluxDB database, e.g. telemetry_acme")
    version: int = Field(description="The map's version at this tenant's last change")
    ready: bool = Field(description="Provisioned on a configured server: write there")
    state: str | None = Field(description="Its provisioning state; null once deleted")
    node: str | None = Field(description="The server's name, when ready")
    url: str | None = Field(description="The server's URL (no credential), when ready")
    incarnation: str | None = Field(description="Which creation of this tenant id it is")
    deleted: bool = Field(description="A tombstone: the tenant was deleted; forget it")


class NodeBody(BaseModel):
    """A configured server: its name and URL (no credential)."""

    name: str
    url: str


class LocationsPage(BaseModel):
    """The changes after ``since`` (all of the map from 0), in version order."""

    locations: list[LocationBody]
    next_since: int = Field(
        description="Ask from here next: the last version in this page, or the map's version "
        "on the last page"
    )
    more: bool = Field(description="More changes follow: ask again at once with next_since")
    version: int = Field(description="The map's version now")
    nodes: list[NodeBody] = Field(description="Every configured server: use these URLs")
    database_prefix: str = Field(description="A tenant's database is this plus its id")
    epoch: str = Field(description="Which map: when it changes, load the whole map again")
    refresh_seconds: float = Field(description="How often a client should ask (a hint)")
    max_staleness_seconds: float = Field(
        description="A deletion waits this long after publishing; a client that has not "
        "refreshed for longer may write to a deleted tenant's database"
    )


def locations_token_auth(expected_token: str | None) -> Callable[..., str | None]:
    """An auth dependency accepting ``Authorization: Bearer <LOCATIONS_TOKEN>`` only; with no
    token configured, nobody."""
    return bearer_auth(
        expected_token,
        "LOCATIONS_TOKEN",
        "LocationsToken",
        "`Authorization: Bearer <LOCATIONS_TOKEN>` (read-only; not the operator token)",
    )


def locations_router(require_reader: Callable[..., Any]) -> APIRouter:
    """The ``/locations`` routes, every one behind ``require_reader``."""
    router = APIRouter(
        prefix="/locations",
        tags=["locations"],
        dependencies=[Depends(require_reader)],
        route_class=PlainErrorRoute,
        responses=error_responses(
            {
                401: "Locations credential missing or wrong",
                429: THROTTLED,
                422: "A parameter is not valid (the message names it)",
            }
        ),
    )

    @router.get(
        "",
        response_model=LocationsPage,
        summary="The location map, or its changes since a version",
        responses=error_responses(
            {
                400: "since, limit or whole is not a whole number in range, or since is ahead "
                "of this map",
                410: "Tombstones after since were pruned: load the whole map again (since=0)",
            }
        ),
    )
    def changes(
        since: Annotated[
            str, Query(description="The version you have (0 or absent: the whole map)")
        ] = "0",
        limit: Annotated[
            str, Query(description=f"At most this many locations (1 to {MAX_PAGE})")
        ] = str(DEFAULT_PAGE),
        whole: Annotated[
            str,
            Query(
                description="1: since is where the last page of a whole load (from 0) ended, "
                "not a map you hold; never 410 (tombstones pruned meanwhile are nothing to a "
                "map loaded from nothing). Pass it on the pages of a whole load (the first too: it "
                "changes nothing there)"
            ),
        ] = "0",
    ) -> Response:
        """The locations changed after ``since``, in version order, at most ``limit``; an
        unchanged map answers an empty page at once. Page on with ``next_since`` while
        ``more`` (and ``whole=1`` when loading the whole map); the cost grows with the
        changes, not with the tenants."""
        after = _whole_number("since", since, 0, None)
        size = _whole_number("limit", limit, 1, MAX_PAGE)
        loading = _whole_number("whole", whole, 0, 1) == 1
        settings = get_settings()
        nodes = shared_pool().nodes()  # one reading of the nodes file for the whole answer
        with get_engine().connect() as conn:
            locations.publish(conn)
            try:
                page = locations.changes(
                    conn, after, size, nodes, settings.influxdb_database_prefix, whole=loading
                )
            except locations.SinceInFuture as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
            except locations.SinceTooOld as exc:
                raise HTTPException(status.HTTP_410_GONE, detail=str(exc)) from exc
        # The page's locations come as JSON from Postgres, spliced in as they are: a page holds
        # up to 10,000 (the model documents the shape; the tests hold the two together).
        envelope = {
            "next_since": page.next_since,
            "more": page.more,
            "version": page.current,
            "nodes": [{"name": n.name, "url": locations.public_url(n.url)} for n in nodes],
            "epoch": page.epoch,
            "database_prefix": settings.influxdb_database_prefix,
            "refresh_seconds": settings.locations_refresh_seconds,
            "max_staleness_seconds": settings.locations_max_staleness_seconds,
        }
        body = json.dumps(envelope, separators=(",", ":"))
        # Where the next page starts, readable before the body is parsed: a client loading
        # the whole map asks for it while it parses this one.
        ahead = {NEXT_SINCE_HEADER: str(page.next_since)} if page.more else {}
        return Response(
            f'{{"locations":{page.locations_json},{body[1:]}',
            media_type="application/json",
            headers=ahead,
        )

    @router.get(
        "/{tenant_id}",
        summary="One tenant's location",
        responses=error_responses({404: "No such tenant (or it was deleted)"}),
    )
    def one(tenant_id: Annotated[str, Path(description="The tenant's id")]) -> LocationBody:
        """Where the tenant's database is; ``ready`` false (and no server) while it is being
        provisioned, failed or deleted."""
        try:
            validate_tenant_id(tenant_id)
        except InvalidTenantId as exc:  # (a NUL would reach Postgres, which refuses it)
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such tenant: {exc}") from exc
        settings, pool = get_settings(), shared_pool()
        with get_engine().connect() as conn:
            locations.publish(conn)
            found = locations.locate(conn, tenant_id, pool, settings)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such tenant")
        return LocationBody(**found.as_dict())

    return router


def _whole_number(name: str, raw: str, low: int, high: int | None) -> int:
    words = f"from {low}" + (f" to {high}" if high is not None else "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"{name} must be a whole number {words}"
        )
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"{name} must be a whole number {words}"
        )
    return value
