"""What the hooks return: plain dicts, typed as TypedDicts.

The operator API answers with these very types (pydantic validates and documents TypedDicts),
so the descriptions below are what the OpenAPI document says about each field. The hooks keep
returning plain dicts: operators' scripts and the UI rely on dict shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from worker.states import STATES

_STATE = f"Provisioning state, one of: {', '.join(STATES)}"
_DATABASE = "Name of the tenant's InfluxDB database"
_QUEUED = "The broker took the message; false: the reconciler enqueues it later"
_MOMENT = "ISO 8601 time with offset, or null"


class QueueStatus(TypedDict):
    """The provisioning part of the answers to a create or a delete."""

    state: Annotated[str, Field(description=_STATE)]
    queued: Annotated[bool, Field(description=_QUEUED)]
    database: Annotated[str, Field(description=_DATABASE)]


class DeletedTenant(TypedDict):
    """A tenant being deleted: its database is soft-deleted, then the tenant removed."""

    tenant_id: str
    influxdb: QueueStatus


class CreatedTenant(TypedDict):
    """A tenant just stored as pending; provisioning is queued."""

    tenant_id: str
    name: Annotated[str, Field(description="The display name, surrounding spaces stripped")]
    status: Annotated[str, Field(description='Always "created"')]
    influxdb: QueueStatus


class LiveStatus(TypedDict):
    """What InfluxDB says right now; ``error`` explains a null."""

    exists: Annotated[bool | None, Field(description="The database exists on the server")]
    telemetry_count: Annotated[
        int | None, Field(description="Rows in the telemetry table; null: not counted")
    ]
    error: Annotated[
        str | None,
        Field(description="Why it could not tell (timeout, error, not placed, not this tenant's)"),
    ]
    latency_ms: Annotated[float, Field(description="How long the check took, in milliseconds")]


class InfluxDBStatus(TypedDict):
    """Provisioning state from Postgres plus, optionally, a live check of InfluxDB."""

    database: Annotated[str, Field(description=_DATABASE)]
    node: Annotated[str | None, Field(description="The server it is placed on; null: not yet")]
    node_configured: Annotated[
        bool | None,
        Field(
            description="False: its server left the nodes file and the tenant waits for it; "
            "null: not placed"
        ),
    ]
    incarnation: Annotated[
        str,
        Field(
            description="Random id made with the tenant, carried by its database's _init "
            "marker: whose database it is"
        ),
    ]
    retention_period: Annotated[
        str | None, Field(description="As passed at creation, e.g. 30d; null: kept forever")
    ]
    state: Annotated[str, Field(description=_STATE)]
    stalled_on: Annotated[
        str | None,
        Field(
            description="Failed for a transient reason or a refused token: resumes by itself "
            "when this server (or 'any node') answers"
        ),
    ]
    attempts: Annotated[
        int, Field(description="Attempts since the budget was last renewed (by a retry)")
    ]
    last_error: Annotated[
        str | None, Field(description="The last error's message, secrets removed")
    ]
    error_reason: Annotated[
        str | None, Field(description="Reason code, e.g. unreachable, name_taken, database_limit")
    ]
    next_attempt_at: Annotated[str | None, Field(description=f"Next scheduled retry: {_MOMENT}")]
    provisioned_at: Annotated[str | None, Field(description=_MOMENT)]
    updated_at: Annotated[str | None, Field(description=_MOMENT)]
    live: Annotated[LiveStatus | None, Field(description="Null when not asked for (live=false)")]


class TenantStatsBody(TypedDict):
    """A tenant's stats as the UI's ``get_tenant_stats`` returns them, ``influxdb`` block too."""

    tenant_id: str
    # Null where the UI's own table holds a NULL (a row it made before this worker, say)
    name: Annotated[str | None, Field(description="The display name")]
    status: Annotated[str | None, Field(description="The UI's own tenant status, e.g. active")]
    influxdb: InfluxDBStatus


class InfluxDBCheck(TypedDict):
    """What the inline ``check_tenant_influxdb`` returned (exists, telemetry_count, error),
    plus where provisioning stands: the drop-in's answer (``api_hooks.dropin``)."""

    database: Annotated[str, Field(description=_DATABASE)]
    exists: Annotated[bool | None, Field(description="The database exists; null: unknown")]
    telemetry_count: Annotated[int | None, Field(description="Rows in the telemetry table")]
    error: Annotated[str | None, Field(description="Why the live check could not tell")]
    state: Annotated[str, Field(description=_STATE)]
    provisioned: Annotated[bool, Field(description="state is provisioned")]
    error_reason: Annotated[str | None, Field(description="Why it is not provisioned, if known")]
    node: Annotated[str | None, Field(description="The server it is placed on")]


class TenantSummary(TypedDict):
    """One line of ``list_tenants``."""

    tenant_id: str
    name: str
    state: str
    node: str | None
    attempts: int
    error_reason: str | None
    created_at: str | None  # the tenant's age (the unprovisioned alert's), not its last change
    updated_at: str | None


class NodeReport(TypedDict):
    """One InfluxDB server as operators see it (``tenantctl nodes``, the console's overview)."""

    node: str
    configured: bool  # False: it left the nodes file while tenants live there
    url: str | None  # credentials redacted; None when not configured
    database_limit: int | None  # the nodes file's
    # The limit the server named when it refused a database (422), where the file says more:
    # fix the nodes file (until then, reconcile runs send waiting tenants there to be refused).
    refused_limit: int | None
    tenants: int  # tenants placed there (each holds a slot)
    free: int | None
    full: bool | None  # a 422 said so, or every slot is taken
    observed_databases: int | None  # databases the last reconcile listing saw there
    other_databases: int | None  # of those, not a tenant's placed there: slots taken too
    observed_at: datetime | None
    unavailable_since: datetime | None  # its listing failed, or it refused our token, since
    unavailable_reason: str | None  # why: unreachable, unauthorized, timeout, ...
