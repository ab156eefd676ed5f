"""The hooks for an async UI: the same names, the same errors, awaitable.

The sync hooks talk to Postgres, the broker and - for the live check - InfluxDB; called from an
``async def`` route, each would block the UI's event loop (with InfluxDB hanging, every other
request of the UI would wait out the live check). These run them in a worker thread of
anyio's bounded pool (the one Starlette uses for sync routes), so the event loop stays free;
the live check's timeout still bounds how long an await takes.

    from api_hooks.aio import check_tenant_influxdb, provision_tenant_influxdb
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from anyio import to_thread

from api_hooks import dropin, events, status, tenants
from api_hooks.events import TenantEventsBody
from api_hooks.shapes import (
    CreatedTenant,
    DeletedTenant,
    InfluxDBCheck,
    InfluxDBStatus,
    TenantStatsBody,
    TenantSummary,
)
from worker.events import Route

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _in_thread(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    return await to_thread.run_sync(partial(function, *args, **kwargs))


async def create_tenant(
    tenant_id: str,
    name: str,
    retention_period: str | None = None,
    *,
    actor: str | None = tenants.PYTHON_ACTOR,
    route: str = Route.PYTHON,
) -> CreatedTenant:
    """``api_hooks.create_tenant``, awaitable (``actor``: who asked, for the event log)."""
    return await _in_thread(
        tenants.create_tenant, tenant_id, name, retention_period, actor=actor, route=route
    )


async def request_provisioning(
    tenant_id: str, *, actor: str | None = tenants.PYTHON_ACTOR, route: str = Route.PYTHON
) -> bool:
    """``api_hooks.request_provisioning`` (an operator's retry), awaitable."""
    return await _in_thread(tenants.request_provisioning, tenant_id, actor=actor, route=route)


async def adopt_database(
    tenant_id: str,
    node: str | None = None,
    *,
    actor: str | None = tenants.PYTHON_ACTOR,
    route: str = Route.PYTHON,
) -> bool:
    """``api_hooks.adopt_database``, awaitable."""
    return await _in_thread(tenants.adopt_database, tenant_id, node, actor=actor, route=route)


async def delete_tenant(
    tenant_id: str, *, actor: str | None = tenants.PYTHON_ACTOR, route: str = Route.PYTHON
) -> DeletedTenant:
    """``api_hooks.delete_tenant``, awaitable."""
    return await _in_thread(tenants.delete_tenant, tenant_id, actor=actor, route=route)


async def tenant_events(
    tenant_id: str, after: int | str | None = None, limit: int | str | None = None
) -> TenantEventsBody:
    """``api_hooks.tenant_events`` (a tenant's events as CloudEvents), awaitable."""
    return await _in_thread(events.tenant_events, tenant_id, after, limit)


async def tenant_influxdb_status(tenant_id: str, live: bool = True) -> InfluxDBStatus:
    """``api_hooks.tenant_influxdb_status``, awaitable; the live check stays bounded."""
    return await _in_thread(status.tenant_influxdb_status, tenant_id, live)


async def tenant_stats(tenant_id: str, live: bool = True) -> TenantStatsBody:
    """``api_hooks.tenant_stats`` (the UI's stats body), awaitable."""
    return await _in_thread(status.tenant_stats, tenant_id, live)


async def list_tenants(state: str | None = None, limit: int = 100) -> list[TenantSummary]:
    """``api_hooks.list_tenants``, awaitable."""
    return await _in_thread(status.list_tenants, state, limit)


async def provision_tenant_influxdb(tenant_id: str) -> bool:
    """The drop-in for the UI's inline call (``api_hooks.dropin``), awaitable."""
    return await _in_thread(dropin.provision_tenant_influxdb, tenant_id)


async def check_tenant_influxdb(tenant_id: str) -> InfluxDBCheck:
    """The drop-in for the UI's inline check (``api_hooks.dropin``), awaitable."""
    return await _in_thread(dropin.check_tenant_influxdb, tenant_id)
